"""`python -m modelgrid_sandbox`: the local sandbox. Starts a real control plane and simulated GPU
nodes, installs what the project has, prints the kubeconfig, and stays up until interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from modelgrid_sandbox.cluster import install_project, start_cluster
from modelgrid_sandbox.controlplane import REPO


def main() -> int:
    p = argparse.ArgumentParser(prog="modelgrid-sandbox", description=__doc__.splitlines()[0])
    p.add_argument("--log-dir", type=Path, default=REPO / "build" / "sandbox-logs")
    p.add_argument("--kubeconfig-out", type=Path, default=REPO / "build" / "sandbox.kubeconfig")
    p.add_argument("--exit-after", type=float, default=None, help="stop after N seconds (tests)")
    args = p.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    args.log_dir.mkdir(parents=True, exist_ok=True)
    print(f"starting the control plane (logs: {args.log_dir})...", file=sys.stderr, flush=True)
    cluster = start_cluster(log_dir=args.log_dir)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        installed = install_project(cluster)
        args.kubeconfig_out.parent.mkdir(parents=True, exist_ok=True)
        args.kubeconfig_out.write_text(cluster.kubeconfig.read_text())
        # Wait until the scheduler sees the nodes as Ready before announcing the sandbox.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "NotReady" in cluster.kubectl("get", "nodes"):
            time.sleep(0.5)
        print(cluster.kubectl("get", "nodes", "-L", "nvidia.com/gpu.product"), flush=True)
        print(f"installed: {', '.join(installed) or 'nothing yet (no CRDs in crds/)'}", flush=True)
        print(f"export KUBECONFIG={args.kubeconfig_out}", flush=True)
        print("sandbox is up; Ctrl-C stops it and removes everything", flush=True)
        stop.wait(args.exit_after)
    finally:
        cluster.stop()
        args.kubeconfig_out.unlink(missing_ok=True)
        print("sandbox stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
