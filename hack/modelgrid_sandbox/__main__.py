"""`python -m modelgrid_sandbox`: the local sandbox. Starts a real control plane and simulated GPU
nodes, installs the CRDs, the TierPolicies and the operator, prints the kubeconfig, and stays up
until interrupted. With `--demo` it also applies examples/qualification.yaml, waits for the
verdict, prints `kubectl get mq` and the verdict, and stops."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from modelgrid_operator.jobs import DEFAULT_BENCHMARK_NAMESPACE
from modelgrid_sandbox.cluster import install_project, start_cluster, start_operator
from modelgrid_sandbox.controlplane import REPO

EXAMPLE = REPO / "examples" / "qualification.yaml"
REPORT_DIR = REPO / "build" / "sandbox-report"


def evidence_root(cluster: object) -> Path:
    """Where the sandbox's evidence claim lives on this machine (a local folder)."""
    workdir: Path = cluster.control_plane.workdir  # type: ignore[attr-defined]
    return workdir / "evidence" / DEFAULT_BENCHMARK_NAMESPACE


def _report(cluster: object, out: Path) -> int:
    """`kubectl modelgrid report -A` through kubectl's plugin mechanism, as a user runs it."""
    kubectl = cluster.control_plane.bin_dir / "kubectl"  # type: ignore[attr-defined]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(cluster.kubeconfig),  # type: ignore[attr-defined]
    }
    argv = [
        str(kubectl),
        "modelgrid",
        "report",
        "-A",
        "--evidence-root",
        str(evidence_root(cluster)),
        "--output-dir",
        str(out),
    ]
    print(f"$ kubectl modelgrid report -A --evidence-root ... --output-dir {out}", flush=True)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        print(f"the report failed: {proc.stderr.strip()}", file=sys.stderr)
        return proc.returncode
    report = (out / "report.md").read_text()
    print(report.split("## Key Findings:")[0], flush=True)
    return 0


def _wait_ready_nodes(cluster: object, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = cluster.kubectl("get", "nodes", "-o", "json")  # type: ignore[attr-defined]
        nodes = json.loads(out)["items"]
        ready = [
            n
            for n in nodes
            if any(
                c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]
            )
            and not any(
                t["key"].startswith("node.kubernetes.io/") for t in n["spec"].get("taints", [])
            )
        ]
        if nodes and len(ready) == len(nodes):
            return
        time.sleep(0.5)


def _demo(cluster: object, timeout_s: float) -> int:
    kubectl = cluster.kubectl  # type: ignore[attr-defined]
    print(f"applying {EXAMPLE.relative_to(REPO)}", flush=True)
    kubectl("apply", "-f", str(EXAMPLE))
    deadline = time.monotonic() + timeout_s
    phase = ""
    while time.monotonic() < deadline:
        obj = json.loads(kubectl("get", "mq", "llama-8b-shape", "-n", "default", "-o", "json"))
        phase = (obj.get("status") or {}).get("phase", "")
        if phase in ("Succeeded", "Failed"):
            break
        time.sleep(2)
    print(kubectl("get", "mq", "-A"), flush=True)
    st = obj.get("status") or {}
    if phase != "Succeeded":
        conds = {c["type"]: c for c in st.get("conditions", [])}
        print(
            f"no verdict: phase={phase!r} {conds.get('Stalled', {}).get('message', '')}",
            file=sys.stderr,
        )
        return 1
    print(
        f"tier: {st['tier']['label']}  discount: {st['discountPercent']}%  "
        f"verification: {st['verification']['result']}",
        flush=True,
    )
    for c in st["verification"]["claims"]:
        mark = "ok" if c["withinTolerance"] else "FAIL"
        print(
            f"  {c['metric']:<16} claimed {c['claimed']:<10g} measured {c['measured']:<10.4g} "
            f"delta {c['deltaPercent']:+.1f}%  {mark}",
            flush=True,
        )
    print(f"reasoning: {st['reasoning']}", flush=True)
    return _report(cluster, REPORT_DIR)


def main() -> int:
    p = argparse.ArgumentParser(prog="modelgrid-sandbox", description=__doc__.splitlines()[0])
    p.add_argument("--log-dir", type=Path, default=REPO / "build" / "sandbox-logs")
    p.add_argument("--kubeconfig-out", type=Path, default=REPO / "build" / "sandbox.kubeconfig")
    p.add_argument("--exit-after", type=float, default=None, help="stop after N seconds (tests)")
    p.add_argument(
        "--demo",
        action="store_true",
        help="apply examples/qualification.yaml, print the verdict, and stop",
    )
    p.add_argument("--demo-timeout", type=float, default=600)
    p.add_argument(
        "--real-inference",
        action="store_true",
        help="run the declared model on the CPU instead of pacing tokens",
    )
    p.add_argument("--no-operator", action="store_true")
    args = p.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    args.log_dir.mkdir(parents=True, exist_ok=True)
    print(f"starting the control plane (logs: {args.log_dir})...", file=sys.stderr, flush=True)
    cluster = start_cluster(log_dir=args.log_dir, synthetic_inference=not args.real_inference)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    operator = None
    code = 0
    try:
        installed = install_project(cluster)
        if not args.no_operator and "crds" in installed:
            operator = start_operator(cluster, args.log_dir / "operator.log")
            installed.append("operator (local process, logs in operator.log)")
        args.kubeconfig_out.parent.mkdir(parents=True, exist_ok=True)
        args.kubeconfig_out.write_text(cluster.kubeconfig.read_text())
        _wait_ready_nodes(cluster)
        print(cluster.kubectl("get", "nodes", "-L", "nvidia.com/gpu.product"), flush=True)
        print(f"installed: {', '.join(installed) or 'nothing'}", flush=True)
        if args.demo:
            code = _demo(cluster, args.demo_timeout)
        else:
            print(f"export KUBECONFIG={args.kubeconfig_out}", flush=True)
            print(f"kept evidence (the claim modelgrid-evidence): {evidence_root(cluster)}")
            print("sandbox is up; Ctrl-C stops it and removes everything", flush=True)
            stop.wait(args.exit_after)
    finally:
        if operator is not None:
            operator.stop()
        cluster.stop()
        args.kubeconfig_out.unlink(missing_ok=True)
        print("sandbox stopped", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
