"""Where an `endpoint` model source may point. Pure: parses a URL, never resolves it.

The benchmark pod runs in the operator's benchmark namespace, so a URL a tenant writes is a
request made from inside the cluster on the tenant's behalf. Admission (the CRD) already
refuses URLs without a host or with credentials; this module classifies the host so that the
operator refuses cluster-internal and link-local targets (the cloud's metadata service, the
apiserver, other tenants' Services) unless the TierPolicy allows them. Names are classified
by their shape only: a public name that resolves to an internal address is the NetworkPolicy's
to stop (the chart's `benchmark.networkPolicy`), not this module's.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from enum import StrEnum
from urllib.parse import urlsplit

from modelgrid_operator.api import EndpointAccess


class Target(StrEnum):
    PUBLIC = "public"
    CLUSTER_INTERNAL = "cluster-internal"
    LINK_LOCAL = "link-local"


#: Names that reach the cloud's instance metadata wherever they resolve.
METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "instance-data"})
#: Suffixes that only resolve inside a cluster or a host.
INTERNAL_SUFFIXES = (".svc", ".cluster.local", ".local", ".internal", ".localhost", ".localdomain")
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")
#: Ranges no public service lives in: private, shared (CGNAT), loopback, unspecified,
#: benchmarking, and IPv6 unique-local.
_INTERNAL_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "::/128",
        "::1/128",
        "fc00::/7",
    )
)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
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


def _classify_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Target:
    """An address literal's class; an IPv4-mapped IPv6 address counts as its IPv4 address."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_link_local:
        return Target.LINK_LOCAL
    if addr.is_multicast or any(addr in net for net in _INTERNAL_NETS):
        return Target.CLUSTER_INTERNAL
    return Target.PUBLIC


def _classify_name(host: str) -> Target:
    """A DNS name's class by its shape: single labels resolve through the pod's search path
    into the cluster; cluster and host suffixes never leave it."""
    if host in METADATA_NAMES:
        return Target.LINK_LOCAL
    if host == "localhost" or "." not in host or host.endswith(INTERNAL_SUFFIXES):
        return Target.CLUSTER_INTERNAL
    if host.startswith("kubernetes.default"):
        return Target.CLUSTER_INTERNAL
    return Target.PUBLIC


def classify(url: str) -> Target:
    """The class of the host `url` names. ValueError for a URL without a host."""
    host = (urlsplit(url.strip()).hostname or "").rstrip(".").lower()
    if not host:
        raise ValueError(f"{url!r} names no host")
    addr = _address(host)
    return _classify_address(addr) if addr is not None else _classify_name(host)


def endpoint_refusal(url: str, access: EndpointAccess) -> str | None:
    """Why the policy does not let a benchmark call `url`, or None when it does."""
    try:
        target = classify(url)
    except ValueError as exc:
        return f"spec.model.source.endpoint.url {exc}"
    if target is Target.LINK_LOCAL and not access.allow_link_local:
        return (
            f"spec.model.source.endpoint.url {url!r} is a link-local address (such as the "
            "cloud's instance metadata service); the TierPolicy does not allow it "
            "(spec.endpointAccess.allowLinkLocal)"
        )
    if target is Target.CLUSTER_INTERNAL and not access.allow_cluster_internal:
        return (
            f"spec.model.source.endpoint.url {url!r} is inside the cluster or a private "
            "network; the TierPolicy does not allow it (spec.endpointAccess.allowClusterInternal)"
        )
    return None
