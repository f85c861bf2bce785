"""What a host a benchmark would call reaches: public, cluster-internal or link-local. Pure.

Shared by both sides: the operator judges the host a spec names before it makes a Job (by its
shape: a literal address, or a name's suffix), and the benchmark judges every address the name
resolves to before it sends a request, so a public-looking name that resolves inside the
cluster is refused too. The TierPolicy's `endpointAccess` says which classes besides public a
benchmark may call.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from enum import StrEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Target(StrEnum):
    PUBLIC = "public"
    CLUSTER_INTERNAL = "cluster-internal"
    LINK_LOCAL = "link-local"


#: Names that reach the cloud's instance metadata wherever they resolve.
METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "instance-data"})
#: Last labels that only resolve inside a cluster, a host or a private network (`svc`, `pod`
#: and `cluster` are Kubernetes' own; the rest are reserved or conventional private suffixes).
INTERNAL_LAST_LABELS = frozenset(
    {
        "svc",
        "pod",
        "cluster",
        "local",
        "internal",
        "localhost",
        "localdomain",
        "lan",
        "home",
        "corp",
        "intranet",
        "private",
        "arpa",
    }
)
#: A top-level domain: letters only (or an IDN's xn-- form). A last label with digits or a
#: hyphen (a namespace such as `team-b`) is a search-path name into the cluster.
_TLD = re.compile(r"^([a-z]{2,63}|xn--[a-z0-9-]{1,59})$")
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_of(host: str) -> IPAddress | None:
    """The IP address a host literal denotes, in any form a resolver accepts (dotted,
    decimal, hex or octal IPv4, IPv6 with or without brackets), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_ipv4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, IPv4-compatible)."""
    if not isinstance(addr, ipaddress.IPv6Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _NAT64 or (int(addr) >> 32 == 0 and int(addr) > 1):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def classify_address(addr: IPAddress) -> Target:
    """An address's class: link-local (where metadata services answer), anything not
    globally routable (private, shared, loopback, reserved, multicast), or public."""
    inner = _embedded_ipv4(addr)
    if inner is not None:
        addr = inner
    if addr.is_link_local:
        return Target.LINK_LOCAL
    if not addr.is_global or addr.is_multicast:
        return Target.CLUSTER_INTERNAL
    return Target.PUBLIC


def classify_name(host: str) -> Target:
    """A DNS name's class by its shape: single labels and names whose last label is not a
    top-level domain resolve through the pod's search path into the cluster."""
    labels = host.split(".")
    if host in METADATA_NAMES:
        return Target.LINK_LOCAL
    if len(labels) < 2 or host.startswith("kubernetes.default"):
        return Target.CLUSTER_INTERNAL
    last = labels[-1]
    if last in INTERNAL_LAST_LABELS or not _TLD.match(last):
        return Target.CLUSTER_INTERNAL
    return Target.PUBLIC


def classify_host(host: str) -> Target:
    """The class of a URL's host (case and a trailing dot ignored)."""
    host = host.rstrip(".").lower()
    addr = address_of(host)
    return classify_address(addr) if addr is not None else classify_name(host)


def allowed(target: Target, *, cluster_internal: bool, link_local: bool) -> bool:
    """Whether a policy with these allowances lets a benchmark call a `target`."""
    if target is Target.LINK_LOCAL:
        return link_local
    if target is Target.CLUSTER_INTERNAL:
        return cluster_internal
    return True
