"""Where an endpoint model source may point: the host's class by its literal shape."""

from __future__ import annotations

import pytest

from modelgrid_operator.endpoints import Target, classify, endpoint_refusal
from modelgrid_operator.policy import EndpointAccess


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("https://api.example.com/v1", Target.PUBLIC),
        ("http://8.8.8.8:8000", Target.PUBLIC),
        ("http://[2001:4860:4860::8888]/", Target.PUBLIC),
        ("http://169.254.169.254/latest/meta-data/", Target.LINK_LOCAL),
        ("http://169.254.170.2/v2/credentials", Target.LINK_LOCAL),  # ECS task credentials
        ("http://[fe80::a9fe:a9fe]/", Target.LINK_LOCAL),
        ("http://[::ffff:169.254.169.254]/", Target.LINK_LOCAL),  # IPv4-mapped
        ("http://2852039166/", Target.LINK_LOCAL),  # decimal
        ("http://0xa9fea9fe/", Target.LINK_LOCAL),  # hex
        ("http://0251.0376.0251.0376/", Target.LINK_LOCAL),  # octal
        ("http://169.254.43518/", Target.LINK_LOCAL),  # short form
        ("http://metadata.google.internal/", Target.LINK_LOCAL),
        ("http://METADATA.GOOGLE.INTERNAL./", Target.LINK_LOCAL),  # case, trailing dot
        ("https://kubernetes.default.svc", Target.CLUSTER_INTERNAL),
        ("https://kubernetes.default", Target.CLUSTER_INTERNAL),
        ("https://kubernetes", Target.CLUSTER_INTERNAL),
        ("http://vllm.serving.svc.cluster.local:8000", Target.CLUSTER_INTERNAL),
        ("http://vllm.serving.svc:8000", Target.CLUSTER_INTERNAL),
        ("http://vllm:8000", Target.CLUSTER_INTERNAL),  # single label: the pod's search path
        ("http://localhost:8000", Target.CLUSTER_INTERNAL),
        ("http://127.0.0.1:8000", Target.CLUSTER_INTERNAL),
        ("http://[::1]:8000", Target.CLUSTER_INTERNAL),
        ("http://10.96.0.1/", Target.CLUSTER_INTERNAL),
        ("http://172.20.1.1/", Target.CLUSTER_INTERNAL),
        ("http://192.168.1.1/", Target.CLUSTER_INTERNAL),
        ("http://100.64.0.1/", Target.CLUSTER_INTERNAL),
        ("http://0.0.0.0:8000", Target.CLUSTER_INTERNAL),
        ("http://[fd00::1]/", Target.CLUSTER_INTERNAL),
        ("http://gpu-box.internal:8000", Target.CLUSTER_INTERNAL),
        # names the pod's search path takes into the cluster
        ("http://vllm.team-b:8000/v1", Target.CLUSTER_INTERNAL),  # <service>.<namespace>
        ("http://10-0-0-1.default.pod/", Target.CLUSTER_INTERNAL),
        ("http://kube-dns.kube-system/", Target.CLUSTER_INTERNAL),
        ("http://vllm.ns.svc.corp.example/", Target.PUBLIC),  # by shape; resolved by the pod
        ("http://api.xn--p1ai/", Target.PUBLIC),  # an IDN top-level domain
        # IPv4 inside IPv6, and addresses no public service has
        ("http://[64:ff9b::a9fe:a9fe]/", Target.LINK_LOCAL),  # NAT64
        ("http://[2002:a9fe:a9fe::]/", Target.LINK_LOCAL),  # 6to4
        ("http://[::a9fe:a9fe]/", Target.LINK_LOCAL),  # IPv4-compatible
        ("http://[64:ff9b::a00:1]/", Target.CLUSTER_INTERNAL),  # NAT64 of 10.0.0.1
        ("http://240.0.0.1/", Target.CLUSTER_INTERNAL),  # reserved
        ("http://224.0.0.1/", Target.CLUSTER_INTERNAL),  # multicast
    ],
)
def test_hosts_are_classified_by_what_they_reach(url: str, want: Target) -> None:
    assert classify(url) is want


def test_a_url_without_a_host_is_refused_by_name() -> None:
    why = endpoint_refusal("http://", EndpointAccess())
    assert why is not None
    assert "names no host" in why


def test_each_allowance_opens_only_its_own_class() -> None:
    internal, link_local = "http://vllm.serving.svc:8000", "http://169.254.169.254/"
    only_internal = EndpointAccess(allowClusterInternal=True)
    assert endpoint_refusal(internal, only_internal) is None
    assert "allowLinkLocal" in (endpoint_refusal(link_local, only_internal) or "")
    only_link_local = EndpointAccess(allowLinkLocal=True)
    assert endpoint_refusal(link_local, only_link_local) is None
    assert "allowClusterInternal" in (endpoint_refusal(internal, only_link_local) or "")
    assert endpoint_refusal("https://api.example.com", EndpointAccess()) is None
