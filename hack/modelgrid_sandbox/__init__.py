"""modelgrid_sandbox: a real Kubernetes control plane as local processes, plus simulated GPU nodes.

`controlplane` starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built
from Go modules by hack/build-control-plane.sh) and tears them down without leftovers;
`nodeagent` registers GPU nodes and runs the pods bound to them as local processes (the GPU and
the kubelet are the only simulated parts); `__main__` is the sandbox command. Does I/O.
"""
