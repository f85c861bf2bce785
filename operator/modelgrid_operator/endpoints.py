"""Where an `endpoint` model source may point, judged before a Job is made. Pure: parses a URL,
never resolves it.

The benchmark pod runs in the operator's benchmark namespace, so a URL a tenant writes is a
request made from inside the cluster on the tenant's behalf. Admission (the CRD) already
refuses URLs without a host or with credentials; here the host's shape is classified
(`modelgrid_contract.targets`) so that the operator refuses cluster-internal and link-local
targets (the cloud's metadata service, the apiserver, other tenants' Services) unless the
TierPolicy allows them. A public-looking name that resolves inside is the benchmark's to refuse
(it checks every address it resolves) and the NetworkPolicy's to block.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from modelgrid_contract.targets import Target, allowed, classify_host
from modelgrid_operator.policy import EndpointAccess

__all__ = ["Target", "classify", "endpoint_refusal"]


def classify(url: str) -> Target:
    """The class of the host `url` names. ValueError for a URL without a host."""
    host = urlsplit(url.strip()).hostname or ""
    if not host.rstrip("."):
        raise ValueError(f"{url!r} names no host")
    return classify_host(host)


def endpoint_refusal(url: str, access: EndpointAccess) -> str | None:
    """Why the policy does not let a benchmark call `url`, or None when it does."""
    try:
        target = classify(url)
    except ValueError as exc:
        return f"spec.model.source.endpoint.url {exc}"
    if allowed(
        target,
        cluster_internal=access.allow_cluster_internal,
        link_local=access.allow_link_local,
    ):
        return None
    if target is Target.LINK_LOCAL:
        return (
            f"spec.model.source.endpoint.url {url!r} is a link-local address (such as the "
            "cloud's instance metadata service); the TierPolicy does not allow it "
            "(spec.endpointAccess.allowLinkLocal)"
        )
    return (
        f"spec.model.source.endpoint.url {url!r} is inside the cluster or a private "
        "network; the TierPolicy does not allow it (spec.endpointAccess.allowClusterInternal)"
    )
