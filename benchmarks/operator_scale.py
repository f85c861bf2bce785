"""The operator at fleet scale on the real control plane, every figure from one run. Does I/O.

Starts the sandbox (etcd, kube-apiserver, controller-manager and scheduler as local processes,
simulated GPU nodes whose pods pace tokens instead of running a model) and the operator with
the sandbox's policy (model-card-sandbox: simulated results are priced), applies
`--qualifications` ModelQualifications spread over `--namespaces` namespaces in one burst, and
measures, with monotonic clocks in this process:

1. apply -> first status: from just before each create request to the first watch event in
   which that qualification has a non-empty `status` (a watch on every ModelQualification,
   opened before the first create);
2. Job finished -> verdict: from the first watch event in which a qualification's benchmark Job
   carries a finished condition (SuccessCriteriaMet, Complete, FailureTarget or Failed; the
   latest such Job before the verdict, for a qualification that ran more than one) to the
   first watch event in which the qualification's phase is Succeeded or Failed;
3. the raw apiserver watch latency in the same run: a ConfigMap patched about once a second
   while the qualifications run, timed from just before the patch to its watch event (what (1)
   and (2) cannot beat: the same apiserver, watch path and Python process);
4. how many qualifications ended Succeeded, Failed, or not at all (stuck) within `--timeout-s`;
5. the operator's resident memory (VmRSS of its process) when all have ended, and again after
   every qualification is deleted and `--settle-seconds` have passed;
6. idle API requests per second: `apiserver_request_total` (summed over every series) from the
   apiserver's /metrics, scraped at both ends of `--idle-seconds` with every qualification
   finished and the operator running, then the same with the operator stopped (what the
   simulated nodes, the controller-manager and the scheduler send on their own); the operator's
   figure is the difference.

Prints a JSON summary on stdout; `--markdown` adds a table for docs/benchmarks.md, every figure
beside its target. The control-plane and operator logs stay under build/operator-scale/<run>/.
The cluster and the operator are always stopped, on an error and on Ctrl-C or SIGTERM too.

    MODELGRID_K8S_BIN=... python benchmarks/operator_scale.py --qualifications 500 --markdown
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import HTTPError

from modelgrid_operator.jobs import (
    DEFAULT_BENCHMARK_NAMESPACE,
    LABEL_QUALIFICATION,
    LABEL_QUALIFICATION_NAMESPACE,
)
from modelgrid_sandbox.cluster import (
    SANDBOX_POLICY,
    Cluster,
    OperatorProcess,
    api_client,
    install_project,
    start_cluster,
    start_operator,
)
from modelgrid_sandbox.controlplane import BINARIES, REPO, ControlPlaneError
from modelgrid_sandbox.nodeagent import NodeSpec

GROUP, VERSION, PLURAL = "modelgrid.firmus.ai", "v1alpha1", "modelqualifications"
TERMINAL = ("Succeeded", "Failed")
#: The Job conditions that say it has finished (the first two come before the last two, once
#: the Job's pods are gone); the operator counts a Job done at any of them.
JOB_DONE = ("SuccessCriteriaMet", "Complete", "FailureTarget", "Failed")
NS_PREFIX = "scale"
PROBE_NAMESPACE = "scale-watch-probe"
PROBE_NAME = "watch-probe"
GPUS_PER_NODE = 8
#: The issue's targets: (figure, comparison, bound, unit).
TARGETS = {
    "apply_to_status_p50_s": 0.5,
    "apply_to_status_p99_s": 2.0,
    "job_to_verdict_p50_s": 0.5,
    "rss_mib": 150e6 / 2**20,  # the 150 MB: 143.05 MiB
    "idle_requests_per_s": 2.0,
}


class Interrupted(Exception):
    """SIGTERM (or a second signal): stop everything and leave."""


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), interpolated between closest ranks; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def dist(values: list[float]) -> dict[str, Any]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 4)

    return {
        "n": len(values),
        "p50_s": r(percentile(values, 50)),
        "p99_s": r(percentile(values, 99)),
        "max_s": r(max(values) if values else None),
    }


# ------------------------------------------------------------------------------ watching


class Watcher(threading.Thread):
    """List once, then watch from that resourceVersion (again after a 410), calling
    `on_event(type, object, monotonic time read as soon as the line arrived)`."""

    def __init__(
        self,
        name: str,
        list_fn: Callable[..., Any],
        on_event: Callable[[str, dict[str, Any], float], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(name=f"watch-{name}", daemon=True)
        self.list_fn, self.on_event, self.kwargs = list_fn, on_event, kwargs
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self._resp: Any = None

    def run(self) -> None:
        rv: str | None = None
        while not self.stopping.is_set():
            try:
                if rv is None:
                    listing = self.list_fn(**self.kwargs, _preload_content=False)
                    try:
                        listed = json.loads(listing.data)
                    finally:
                        listing.release_conn()
                    now = time.monotonic()
                    for item in listed.get("items") or []:
                        self.on_event("LISTED", item, now)
                    rv = listed["metadata"]["resourceVersion"]
                self._resp = self.list_fn(
                    **self.kwargs,
                    watch=True,
                    resource_version=rv,
                    allow_watch_bookmarks=True,
                    timeout_seconds=900,
                    _preload_content=False,
                )
                self.ready.set()
                for line in iter_resp_lines(self._resp):  # type: ignore[no-untyped-call]
                    now = time.monotonic()
                    if not line:
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        if obj.get("code") == 410:
                            rv = None  # too old: list again
                            break
                        raise RuntimeError(f"watch error: {obj.get('message')}")
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if event.get("type") != "BOOKMARK":
                        self.on_event(str(event.get("type")), obj, now)
                    if self.stopping.is_set():
                        return
            except (ApiException, HTTPError, OSError, RuntimeError, ValueError) as exc:
                if self.stopping.is_set():
                    return
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                time.sleep(0.5)
            finally:
                stream, self._resp = self._resp, None
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()

    def stop(self) -> None:
        self.stopping.set()
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):
                if hasattr(resp, "shutdown"):
                    resp.shutdown()  # unblocks a read in progress (urllib3 >= 2.3)
                resp.close()


@dataclass
class Qualification:
    namespace: str
    name: str
    applied: float | None = None  # just before the create request
    created: float | None = None  # when it returned
    uid: str = ""
    first_status: float | None = None
    first_phase: str = ""
    verdict: float | None = None
    verdict_phase: str = ""
    phase: str = ""
    left_verdict: bool = False  # was terminal, later was not
    status_events: int = 0
    deleted: float | None = None
    stalled: str = ""


@dataclass
class Timeline:
    """What the watches saw, guarded by `lock` (the watch threads write, the main thread reads)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    mqs: dict[tuple[str, str], Qualification] = field(default_factory=dict)
    #: per qualification uid: {Job name: first time it was seen finished}
    job_done: dict[str, dict[str, float]] = field(default_factory=dict)
    job_outcome: dict[str, str] = field(default_factory=dict)
    #: Job name: when the watch first saw it (its creation)
    job_created: dict[str, float] = field(default_factory=dict)
    probe_seen: dict[str, float] = field(default_factory=dict)
    probe_cond: threading.Condition = field(default_factory=threading.Condition)

    def on_mq(self, kind: str, obj: dict[str, Any], now: float) -> None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        with self.lock:
            q = self.mqs.get(key)
            if q is None:
                return
            q.uid = q.uid or meta.get("uid", "")
            if kind == "DELETED":
                q.deleted = q.deleted or now
                return
            status = obj.get("status") or {}
            if not status:
                return
            q.status_events += 1
            if q.first_status is None:
                q.first_status, q.first_phase = now, str(status.get("phase") or "(none)")
            phase = str(status.get("phase") or "")
            if phase in TERMINAL and q.verdict is None:
                q.verdict, q.verdict_phase = now, phase
            if q.verdict is not None and phase not in TERMINAL:
                q.left_verdict = True
            q.phase = phase
            for cond in status.get("conditions") or []:
                if cond.get("type") == "Stalled" and cond.get("status") == "True":
                    q.stalled = f"{cond.get('reason')}: {cond.get('message')}"[:300]

    def on_job(self, kind: str, obj: dict[str, Any], now: float) -> None:
        meta = obj.get("metadata") or {}
        uid = (meta.get("labels") or {}).get(LABEL_QUALIFICATION)
        if not uid or kind == "DELETED":
            return
        name = meta.get("name", "")
        conds = (obj.get("status") or {}).get("conditions") or []
        done = [c["type"] for c in conds if c.get("type") in JOB_DONE and c.get("status") == "True"]
        with self.lock:
            self.job_created.setdefault(name, now)
            if done:
                self.job_done.setdefault(uid, {}).setdefault(name, now)
                if "Complete" in done or "Failed" in done:
                    self.job_outcome[name] = "Complete" if "Complete" in done else "Failed"

    def on_probe(self, kind: str, obj: dict[str, Any], now: float) -> None:
        seq = (obj.get("data") or {}).get("seq")
        if seq is None or kind == "DELETED":
            return
        with self.probe_cond:
            self.probe_seen.setdefault(seq, now)
            self.probe_cond.notify_all()


class Prober(threading.Thread):
    """Patches the probe ConfigMap every `interval_s` and times its watch event."""

    def __init__(self, api: client.ApiClient, timeline: Timeline, interval_s: float) -> None:
        super().__init__(name="watch-probe", daemon=True)
        self.core = client.CoreV1Api(api)
        self.timeline, self.interval_s = timeline, interval_s
        self.stopping = threading.Event()
        self.latencies: list[float] = []
        self.lost = 0
        self.seq = 0

    def probe(self) -> None:
        self.seq += 1
        seq = str(self.seq)
        start = time.monotonic()
        self.core.patch_namespaced_config_map(PROBE_NAME, PROBE_NAMESPACE, {"data": {"seq": seq}})
        cond = self.timeline.probe_cond
        with cond:
            cond.wait_for(lambda: seq in self.timeline.probe_seen, timeout=30)
            seen = self.timeline.probe_seen.get(seq)
        if seen is None:
            self.lost += 1
        else:
            self.latencies.append(seen - start)

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:
                self.probe()
            except (ApiException, HTTPError, OSError):
                self.lost += 1


# ------------------------------------------------------------------------------ measuring


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def request_counts(api: client.ApiClient) -> dict[str, float]:
    """apiserver_request_total from /metrics, summed per "VERB resource[/subresource]"."""
    method, url, headers, _, _ = api.param_serialize(
        "GET", "/metrics", header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"]
    )
    resp = api.call_api(method, url, header_params=headers, _request_timeout=60)
    if not 200 <= resp.status < 300:
        raise RuntimeError(f"GET /metrics answered {resp.status} {resp.reason}")
    text = bytes(resp.read() or b"").decode()  # type: ignore[no-untyped-call]
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line.rpartition("}")
        labels = dict(_LABEL.findall(labels_text))
        resource = labels.get("resource") or "(non-resource)"
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        key = f"{labels.get('verb', '')} {resource}"
        counts[key] = counts.get(key, 0.0) + float(value.split()[0])
    return counts


def idle_rate(api: client.ApiClient, seconds: float) -> tuple[float, dict[str, float]]:
    """API requests per second over `seconds`: in all, and per verb and resource."""
    before, start = request_counts(api), time.monotonic()
    time.sleep(seconds)
    after, elapsed = request_counts(api), time.monotonic() - start
    per = {
        k: (n - before.get(k, 0.0)) / elapsed for k, n in after.items() if n != before.get(k, 0.0)
    }
    return (sum(after.values()) - sum(before.values())) / elapsed, per


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM in MiB, and user+system CPU seconds, of a live process."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(rest.split()[0]) / 1024, 1)
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        out["cpu_s"] = round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    return out


def wait_nodes_ready(api: client.ApiClient, count: int, timeout_s: float = 120) -> None:
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = [
            n
            for n in core.list_node().items
            if n.status is not None
            and n.spec is not None
            and any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
            and not any(t.key.startswith("node.kubernetes.io/") for t in n.spec.taints or [])
        ]
        if len(ready) >= count:
            return
        time.sleep(0.3)
    raise TimeoutError(f"the {count} simulated nodes were not Ready after {timeout_s:.0f} s")


def qualification(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """A paced qualification as the control-plane tests write them, with a small workload."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelQualification",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "operator-scale"}},
        "spec": {
            "model": {
                "name": f"{name}-model",
                "source": {"randomWeights": {"architecture": "tiny-llama"}},
            },
            "workload": {
                "samples": args.samples,
                "tokensPerSample": args.tokens_per_sample,
                "repeats": args.repeats,
                "warmupSamples": 0,
                "inputTokens": 16,
            },
            "claims": {"avgPowerW": 135.0, "powerCV": 0.05},
            "timeoutSeconds": 300,
            "attestation": {
                "organization": "operator-scale",
                "declarations": {
                    "onH200Infrastructure": True,
                    "followsMethodology": True,
                    "typicalWorkload": True,
                    "noManipulation": True,
                    "acceptsVerification": True,
                },
            },
        },
    }


def wait_until(what: str, probe: Callable[[], bool], timeout_s: float, every_s: float = 1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(every_s)
    log(f"gave up after {timeout_s:.0f} s waiting for {what}")
    return False


def stop_stray_operators() -> None:
    """An operator this process started but never got back from `start_operator` (interrupted
    while it waited for the operator to be live): find it among our children, end it by pid."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
            if ppid != os.getpid():
                continue
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
            if b"modelgrid_operator" not in argv:
                continue
            pid = int(stat.parent.name)
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    break
                time.sleep(0.2)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


@dataclass
class Run:
    args: argparse.Namespace
    run_dir: Path
    cluster: Cluster | None = None
    operator: OperatorProcess | None = None
    api: client.ApiClient | None = None
    watchers: list[Watcher] = field(default_factory=list)
    prober: Prober | None = None
    timeline: Timeline = field(default_factory=Timeline)
    result: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        if self.prober is not None:
            self.prober.stopping.set()
        for w in self.watchers:
            w.stop()
        if self.operator is not None:
            self.operator.stop()
        stop_stray_operators()
        if self.api is not None:
            with contextlib.suppress(Exception):
                self.api.close()  # type: ignore[no-untyped-call]
        if self.cluster is not None:
            self.cluster.stop()

    def namespaces(self) -> list[str]:
        return [f"{NS_PREFIX}-{i}" for i in range(self.args.namespaces)]

    def execute(self) -> dict[str, Any]:
        a, tl = self.args, self.timeline
        h200_nodes = max(2, math.ceil(a.max_concurrent_jobs / GPUS_PER_NODE))
        fleet = [
            NodeSpec(f"gpu-h200-{i}", "NVIDIA-H200", GPUS_PER_NODE, 143771)
            for i in range(h200_nodes)
        ]
        fleet.append(NodeSpec("cpu-0", None, 0, 0))
        log(f"starting the control plane and {len(fleet)} simulated nodes (logs: {self.run_dir})")
        t0 = time.monotonic()
        self.cluster = cluster = start_cluster(fleet, log_dir=self.run_dir, bin_dir=a.k8s_bin)
        cluster.agent.extra_env.update(
            {
                "MODELGRID_BACKEND_OVERRIDE": "synthetic",
                "MODELGRID_SYNTHETIC_STEP_MS": str(a.step_ms),
            }
        )
        self.api = api = api_client(cluster.kubeconfig)
        wait_nodes_ready(api, len(fleet))
        install_project(cluster)
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        for ns in [*self.namespaces(), PROBE_NAMESPACE]:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        core.create_namespaced_config_map(
            PROBE_NAMESPACE,
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name=PROBE_NAME), data={"seq": "0"}),
        )
        names = [
            (self.namespaces()[i % a.namespaces], f"q-{i:05d}") for i in range(a.qualifications)
        ]
        for ns, name in names:
            tl.mqs[(ns, name)] = Qualification(ns, name)
        self.watchers = [
            Watcher(
                "mq", partial(custom.list_cluster_custom_object, GROUP, VERSION, PLURAL), tl.on_mq
            ),
            Watcher(
                "jobs",
                partial(client.BatchV1Api(api).list_namespaced_job, DEFAULT_BENCHMARK_NAMESPACE),
                tl.on_job,
            ),
            Watcher(
                "probe",
                partial(core.list_namespaced_config_map, PROBE_NAMESPACE),
                tl.on_probe,
                field_selector=f"metadata.name={PROBE_NAME}",
            ),
        ]
        for w in self.watchers:
            w.start()
        for w in self.watchers:
            if not w.ready.wait(60):
                raise TimeoutError(f"{w.name} did not open: {w.errors[-1:]}")
        extra_env = {"MODELGRID_MAX_CONCURRENT_JOBS": str(a.max_concurrent_jobs)}
        if a.resync_seconds is not None:
            extra_env["MODELGRID_RESYNC_SECONDS"] = str(a.resync_seconds)
        log("starting the operator")
        self.operator = op = start_operator(
            cluster, self.run_dir / "operator.log", default_policy=a.policy, extra_env=extra_env
        )
        log(
            f"cluster and operator up after {time.monotonic() - t0:.1f} s; "
            f"operator pid {op.proc.pid}"
        )
        # let kopf open its watches first: qualifications made in the operator's first
        # seconds would time its start-up, not how it handles them
        time.sleep(a.settle_seconds)
        rss_start = proc_status(op.proc.pid)

        self.prober = Prober(api, tl, a.probe_interval)
        self.prober.start()

        log(f"creating {len(names)} qualifications in {a.namespaces} namespaces")
        burst_start = time.monotonic()
        create_errors: list[str] = []
        for ns, name in names:
            q = tl.mqs[(ns, name)]
            q.applied = time.monotonic()
            try:
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, ns, PLURAL, qualification(name, a)
                )
            except ApiException as exc:
                create_errors.append(f"{ns}/{name}: {exc.status} {exc.reason}")
                q.applied = None
                continue
            q.created = time.monotonic()
        burst_s = time.monotonic() - burst_start
        log(f"created in {burst_s:.1f} s; waiting up to {a.timeout_s:.0f} s for every verdict")

        def pending() -> list[Qualification]:
            with tl.lock:
                return [q for q in tl.mqs.values() if q.applied is not None and q.verdict is None]

        last_report = [time.monotonic()]

        def all_done() -> bool:
            left = pending()
            if time.monotonic() - last_report[0] > 15:
                last_report[0] = time.monotonic()
                phases = Counter(q.phase or "(no status)" for q in tl.mqs.values())
                log(
                    f"{len(left)} without a verdict; phases {dict(phases)}; "
                    f"operator {proc_status(op.proc.pid)}"
                )
            if not op.alive():
                raise RuntimeError(f"the operator exited ({op.proc.returncode}); see {op.log_path}")
            return not left

        wait_until("every verdict", all_done, a.timeout_s, every_s=0.5)
        all_end = time.monotonic()
        self.prober.stopping.set()
        self.prober.join(timeout=35)
        rss_finished = proc_status(op.proc.pid)
        log(f"verdicts done after {all_end - burst_start:.1f} s; operator {rss_finished}")

        with tl.lock:
            mqs = list(tl.mqs.values())
            job_done = {u: dict(j) for u, j in tl.job_done.items()}
            job_created = sorted(tl.job_created.values())
            finishes = sorted(t for per in tl.job_done.values() for t in per.values())
            job_outcomes = Counter(tl.job_outcome.values())
        apply_lat = [q.first_status - q.applied for q in mqs if q.first_status and q.applied]
        by_phase: dict[str, list[float]] = {}
        for q in mqs:
            if q.first_status and q.applied:
                by_phase.setdefault(q.first_phase, []).append(q.first_status - q.applied)
        # the i-th Job past the first C needs i - C finished ones: how long after the
        # (i - C)-th finish it came (only where a slot was what it waited for)
        cap = a.max_concurrent_jobs
        slot_lat = [
            created - finishes[i - cap]
            for i, created in enumerate(job_created)
            if i >= cap and i - cap < len(finishes) and finishes[i - cap] <= created
        ]
        verdict_lat: list[float] = []
        no_job = 0
        for q in mqs:
            if q.verdict is None:
                continue
            finished = [t for t in job_done.get(q.uid, {}).values() if t <= q.verdict]
            if finished:
                verdict_lat.append(q.verdict - max(finished))
            else:
                no_job += 1
        outcome = Counter(q.verdict_phase or "stuck" for q in mqs if q.applied is not None)
        refusals = Counter(q.stalled[:160] for q in mqs if q.verdict_phase == "Failed")
        stuck = [
            f"{q.namespace}/{q.name} ({q.phase or 'no status'})"
            for q in mqs
            if q.applied and not q.verdict
        ]

        # -- idle, operator running, every qualification finished and still there
        time.sleep(a.settle_seconds)
        cpu_before = proc_status(op.proc.pid).get("cpu_s", 0.0)
        log(f"idle window, operator running: {a.idle_seconds:.0f} s")
        on_rate, on_per = idle_rate(api, a.idle_seconds)
        idle_cpu = proc_status(op.proc.pid).get("cpu_s", 0.0) - cpu_before

        # -- delete every qualification; the operator deletes their Jobs
        log("deleting every qualification")
        delete_start = time.monotonic()
        for ns in self.namespaces():
            custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
        batch = client.BatchV1Api(api)
        selector = f"{LABEL_QUALIFICATION_NAMESPACE} in ({','.join(self.namespaces())})"

        def all_gone() -> bool:
            mq_left = 0
            for ns in self.namespaces():
                listed = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
                mq_left += len(listed["items"])  # type: ignore[index]
            jobs_left = len(
                batch.list_namespaced_job(
                    DEFAULT_BENCHMARK_NAMESPACE, label_selector=selector
                ).items
            )
            return mq_left == 0 and jobs_left == 0

        gone = wait_until("qualifications and their Jobs to go", all_gone, a.timeout_s)
        deleted_s = time.monotonic() - delete_start
        time.sleep(a.settle_seconds)
        rss_deleted = proc_status(op.proc.pid)
        jobs_left = len(
            batch.list_namespaced_job(DEFAULT_BENCHMARK_NAMESPACE, label_selector=selector).items
        )
        log(f"deleted in {deleted_s:.1f} s; operator {rss_deleted}")

        # -- idle, operator stopped: the rest of the cluster's own traffic
        op.stop()
        operator_rc = op.proc.returncode
        time.sleep(2)
        log(f"idle window, operator stopped: {a.idle_seconds:.0f} s")
        off_rate, off_per = idle_rate(api, a.idle_seconds)
        by_request = {
            k: round(on_per.get(k, 0.0) - off_per.get(k, 0.0), 3)
            for k in set(on_per) | set(off_per)
        }
        by_request = dict(
            sorted(
                ((k, v) for k, v in by_request.items() if abs(v) >= 0.01),
                key=lambda kv: -abs(kv[1]),
            )
        )

        log_text = (self.run_dir / "operator.log").read_text(errors="replace")
        deleted_jobs = {
            "by_delete_handler": log_text.count("of a deleted qualification"),
            "by_orphan_sweep": log_text.count("deleting orphaned Job"),
        }
        bad = [
            ln
            for ln in log_text.splitlines()
            if any(w in ln for w in ("ERROR", "Traceback", "CRITICAL"))
        ]
        warnings = [ln for ln in log_text.splitlines() if "WARNING" in ln]

        return {
            "qualifications": a.qualifications,
            "namespaces": a.namespaces,
            "max_concurrent_jobs": a.max_concurrent_jobs,
            "resync_seconds": a.resync_seconds,
            "workload": qualification("x", a)["spec"]["workload"],
            "synthetic_step_ms": a.step_ms,
            "fleet": {"h200_nodes": h200_nodes, "gpus": h200_nodes * GPUS_PER_NODE},
            "create_burst_s": round(burst_s, 2),
            "create_request": dist([q.created - q.applied for q in mqs if q.created and q.applied]),
            "create_errors": create_errors[:10],
            "all_verdicts_s": round(all_end - burst_start, 2),
            "apply_to_first_status": dist(apply_lat),
            "job_finished_to_verdict": dist(verdict_lat)
            | {"verdicts_without_a_finished_job": no_job},
            "raw_watch_latency": dist(self.prober.latencies) | {"lost": self.prober.lost},
            "outcome": {
                "Succeeded": outcome.get("Succeeded", 0),
                "Failed": outcome.get("Failed", 0),
                "stuck": outcome.get("stuck", 0),
                "stuck_examples": stuck[:10],
                "left_verdict_later": sum(q.left_verdict for q in mqs),
                "failed_reasons": dict(refusals.most_common(5)),
            },
            "status_events_per_qualification": round(
                sum(q.status_events for q in mqs) / max(1, len(mqs)), 2
            ),
            "jobs": {"created": len(job_created), **dict(job_outcomes)},
            "slot_freed_to_next_job": dist(slot_lat),
            "apply_to_first_status_by_first_phase": {
                phase: dist(lat) for phase, lat in sorted(by_phase.items())
            },
            "operator_memory_mib": {
                "started": rss_start.get("VmRSS"),
                "all_finished": rss_finished.get("VmRSS"),
                "after_delete": rss_deleted.get("VmRSS"),
                "peak": rss_deleted.get("VmHWM"),
            },
            "operator_cpu_s": {
                "at_all_finished": rss_finished.get("cpu_s"),
                "during_idle_window": round(idle_cpu, 2),
            },
            "delete": {
                "seconds": round(deleted_s, 1),
                "all_gone": gone,
                "jobs_left": jobs_left,
                "jobs_deleted": deleted_jobs,
            },
            "idle_requests_per_s": {
                "seconds": a.idle_seconds,
                "with_operator": round(on_rate, 3),
                "without_operator": round(off_rate, 3),
                "operator": round(on_rate - off_rate, 3),
                "operator_by_request": by_request,
            },
            "operator_exit_code": operator_rc,
            "operator_log": {
                "path": str(self.run_dir / "operator.log"),
                "error_lines": len(bad),
                "warning_lines": len(warnings),
                "first_errors": [ln[:300] for ln in bad[:5]],
                "first_warnings": [ln[:300] for ln in warnings[:5]],
            },
            "watch_errors": {w.name: w.errors[:3] for w in self.watchers if w.errors},
        }


# ------------------------------------------------------------------------------ reporting


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def fmt(x: float | None, unit: str = " s") -> str:
    return "n/a" if x is None else f"{x:.3f}{unit}" if unit == " s" else f"{x:.1f}{unit}"


def verdict_mark(value: float | None, bound: float) -> str:
    return "n/a" if value is None else ("yes" if value < bound else "**no**")


def markdown(summary: dict[str, Any]) -> str:
    s = summary["result"]
    ap, jv, raw = s["apply_to_first_status"], s["job_finished_to_verdict"], s["raw_watch_latency"]
    mem, idle, out = s["operator_memory_mib"], s["idle_requests_per_s"], s["outcome"]
    total = s["qualifications"]
    slot, jobs_gone = s["slot_freed_to_next_job"], s["delete"]["jobs_deleted"]
    finished = out["Succeeded"] + out["Failed"]
    rows = [
        (
            "apply → first status, p50",
            "< 0.5 s",
            fmt(ap["p50_s"]),
            fmt(raw["p50_s"]),
            verdict_mark(ap["p50_s"], TARGETS["apply_to_status_p50_s"]),
        ),
        (
            "apply → first status, p99",
            "< 2 s",
            fmt(ap["p99_s"]),
            fmt(raw["p99_s"]),
            verdict_mark(ap["p99_s"], TARGETS["apply_to_status_p99_s"]),
        ),
        (
            "Job finished → Succeeded/Failed, p50",
            "< 0.5 s",
            fmt(jv["p50_s"]),
            fmt(raw["p50_s"]),
            verdict_mark(jv["p50_s"], TARGETS["job_to_verdict_p50_s"]),
        ),
        ("Job finished → Succeeded/Failed, p99", "(none)", fmt(jv["p99_s"]), fmt(raw["p99_s"]), ""),
        (
            "qualifications finished (none stuck)",
            f"{total} of {total}",
            f"{finished} of {total} ({out['Succeeded']} Succeeded, {out['Failed']} Failed, "
            f"{out['stuck']} stuck)",
            "",
            "yes" if out["stuck"] == 0 and finished == total else "**no**",
        ),
        (
            "operator RSS, all finished",
            "< 150 MB (143 MiB)",
            fmt(mem["all_finished"], " MiB"),
            "",
            verdict_mark(mem["all_finished"], TARGETS["rss_mib"]),
        ),
        (
            "operator RSS, after deleting all",
            "< 150 MB (143 MiB)",
            fmt(mem["after_delete"], " MiB"),
            "",
            verdict_mark(mem["after_delete"], TARGETS["rss_mib"]),
        ),
        (
            "operator idle API requests/s",
            "< 2",
            # with the operator running minus without it; the total bounds its share when the
            # window without it is the busier one (the cluster still cleaning up the deletes)
            f"{idle['operator']:.2f} (all traffic with it running: {idle['with_operator']:.2f})",
            "",
            verdict_mark(idle["operator"], TARGETS["idle_requests_per_s"]),
        ),
        (
            "slot freed → next queued Job created, p50 / p99",
            "(none)",
            f"{fmt(slot['p50_s'])} / {fmt(slot['p99_s'])} (n={slot['n']})",
            "",
            "",
        ),
        (
            "delete all → qualifications and Jobs gone",
            "(none)",
            f"{s['delete']['seconds']:.1f} s ({jobs_gone['by_delete_handler']} Jobs deleted by "
            f"the delete handler, {jobs_gone['by_orphan_sweep']} by the orphan sweep)",
            "",
            "",
        ),
    ]
    lines = [
        f"Operator at scale: {total} qualifications in {s['namespaces']} namespaces, at most "
        f"{s['max_concurrent_jobs']} benchmark Jobs at once (real control plane, simulated "
        f"nodes, one run).",
        "",
        "| Figure | Target | Measured | Raw apiserver watch latency, same run | Met |",
        "|---|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows),
        "",
        f"- samples: {ap['n']} apply→status, {jv['n']} Job→verdict, {raw['n']} watch probes "
        f"({raw['lost']} lost); every verdict {s['all_verdicts_s']:.1f} s after the first "
        f"create; the {total} creates took {s['create_burst_s']:.1f} s",
        f"- idle API requests/s over {idle['seconds']:.0f} s: {idle['with_operator']:.2f} with "
        f"the operator, {idle['without_operator']:.2f} without it (simulated nodes, "
        f"controller-manager, scheduler); peak operator RSS {fmt(mem['peak'], ' MiB')}",
        f"- workload: {json.dumps(s['workload'], separators=(',', ':'))}, paced at "
        f"{s['synthetic_step_ms']} ms a token; Failed reasons: "
        f"{json.dumps(out['failed_reasons']) if out['failed_reasons'] else 'none'}",
        f"- command: `{summary['command']}`",
        f"- machine: {summary['machine_start']['nproc']} CPUs, load average "
        f"{' '.join(str(x) for x in summary['machine_start']['load_average'])} at the start, "
        f"{' '.join(str(x) for x in summary['machine_end']['load_average'])} at the end; "
        f"{summary['machine_start']['platform']}, Python {summary['machine_start']['python']}; "
        f"{summary['date']}",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ options


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _positive_int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} must be between {low} and {high}")
        return value

    return parse


def _seconds(minimum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"{text} must be at least {minimum:g} s")
        return value

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="operator_scale.py",
        description="Measure the operator at fleet scale on the sandbox's real control plane.",
    )
    p.add_argument("--qualifications", type=_positive_int, default=500, help="default: 500")
    p.add_argument("--namespaces", type=_positive_int, default=5, help="default: 5")
    p.add_argument(
        "--max-concurrent-jobs",
        type=_bounded_int(1, 1000),
        default=10,
        help="the operator's MODELGRID_MAX_CONCURRENT_JOBS (default: 10)",
    )
    p.add_argument(
        "--resync-seconds",
        type=_bounded_int(5, 3600),
        default=None,
        help="the operator's MODELGRID_RESYNC_SECONDS, 5 to 3600 (default: the operator's, 30)",
    )
    p.add_argument(
        "--idle-seconds",
        type=_seconds(1),
        default=60,
        help="each idle request-rate window (default: 60)",
    )
    p.add_argument(
        "--timeout-s",
        type=_seconds(1),
        default=3600,
        help="how long to wait for every verdict, and for the deletions (default: 3600)",
    )
    p.add_argument(
        "--settle-seconds",
        type=_seconds(0),
        default=10,
        help="wait after the operator starts, after the verdicts and after the deletions "
        "(default: 10)",
    )
    p.add_argument(
        "--tokens-per-sample",
        type=_bounded_int(1, 32768),
        default=600,
        help="default: 600 (12 whole 1 s windows at 20 ms a token: enough to be priced)",
    )
    p.add_argument("--samples", type=_bounded_int(1, 100000), default=1, help="default: 1")
    p.add_argument("--repeats", type=_bounded_int(1, 100), default=1, help="default: 1")
    p.add_argument(
        "--step-ms",
        type=_bounded_int(1, 10000),
        default=20,
        help="the simulated nodes' pace, ms a token (default: 20)",
    )
    p.add_argument(
        "--probe-interval",
        type=_seconds(0.1),
        default=1.0,
        help="seconds between raw watch-latency probes (default: 1)",
    )
    p.add_argument("--policy", default=SANDBOX_POLICY, help=f"default: {SANDBOX_POLICY}")
    p.add_argument(
        "--k8s-bin",
        type=Path,
        default=os.environ.get("MODELGRID_K8S_BIN") or None,
        help="the control-plane binaries (default: $MODELGRID_K8S_BIN, else the build script's)",
    )
    p.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="where the logs go (default: build/operator-scale/<time>)",
    )
    p.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = p.parse_args(argv)
    if args.namespaces > args.qualifications:
        p.error("--namespaces must not exceed --qualifications")
    if args.k8s_bin is not None:
        missing = [b for b in BINARIES if not (args.k8s_bin / b).is_file()]
        if missing:
            p.error(f"--k8s-bin {args.k8s_bin} lacks {', '.join(missing)}")
    return args


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM raises Interrupted (Ctrl-C raises KeyboardInterrupt), so `finally` runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    run_dir = args.log_dir or REPO / "build" / "operator-scale" / time.strftime("%Y%m%dT%H%M%S")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"operator_scale.py: error: --log-dir {run_dir}: {exc.strerror}", file=sys.stderr)
        return 2
    summary: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/operator_scale.py", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine_start": machine(),
        "log_dir": str(run_dir),
    }
    run = Run(args, run_dir)
    code = 0
    with signals_raise():
        try:
            summary["result"] = run.execute()
        except KeyboardInterrupt:
            log("interrupted (Ctrl-C): stopping the operator and the cluster")
            code = 130
        except Interrupted as exc:
            log(f"interrupted ({exc}): stopping the operator and the cluster")
            code = 143
        except (ControlPlaneError, RuntimeError, TimeoutError, ApiException, OSError) as exc:
            log(f"error: {type(exc).__name__}: {str(exc)[:2000]}")
            log(f"logs are in {run_dir}")
            code = 1
        finally:
            # a second Ctrl-C or SIGTERM must not cut the clean-up short
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
            old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                began = time.monotonic()
                run.stop()
                log(f"operator and cluster stopped ({time.monotonic() - began:.1f} s)")
            finally:
                signal.signal(signal.SIGINT, old_int)
                signal.signal(signal.SIGTERM, old_term)
    if code:
        return code
    summary["machine_end"] = machine()
    text = json.dumps(summary, indent=2)
    (run_dir / "summary.json").write_text(text + "\n")
    print(text)
    if args.markdown:
        table = markdown(summary)
        (run_dir / "summary.md").write_text(table + "\n")
        print()
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
