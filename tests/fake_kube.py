"""An in-memory stand-in for `modelgrid_operator.kube.Kube`, our own boundary to the API.

It keeps objects as the apiserver returns them (plain dicts) and records what the reconciler
asked for, so handler-level behaviour is tested without a cluster; the real API is the
control-plane tier's.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any

from modelgrid_contract.progress import Progress, parse_progress
from modelgrid_operator.jobs import LABEL_CONTROLLER_UID, LABEL_QUALIFICATION, qualification_of
from modelgrid_operator.kubeclient import BenchmarkAccessDenied, JobRefused
from modelgrid_operator.podstate import slim_pod


class FakeKube:
    def __init__(self) -> None:
        self.qualifications: dict[tuple[str, str], dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.pvcs: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str, str]] = []
        self.deleted_jobs: list[tuple[str, str]] = []
        self.pvc_reads: list[tuple[str, str]] = []
        self._uids = itertools.count(1)
        #: the benchmark namespace forbids the operator (its Role gone)
        self.denied = False
        #: the log text of each pod (namespace, name), as pods/log would return its tail
        self.logs: dict[tuple[str, str], str] = {}
        #: every status patch sent (namespace, name), in order
        self.status_patches: list[tuple[str, str]] = []
        #: Jobs whose pods were read whole (from the API, with termination messages)
        self.whole_pod_reads: list[str] = []
        #: how many times every qualification was listed (in pages)
        self.listings = 0

    # -- qualifications and policies
    def get_qualification(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.qualifications.get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    def list_qualifications(
        self, namespace: str | None = None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for (ns, _), o in self.qualifications.items()
            if namespace is None or ns == namespace
        ]

    def qualification_pages(self, page: int = 100) -> Iterator[list[dict[str, Any]]]:
        self.listings += 1
        items = self.list_qualifications()
        for i in range(0, max(len(items), 1), page):
            yield items[i : i + page]

    def qualification_keys(self) -> set[tuple[str, str, str]]:
        return {
            (ns, name, str(o["metadata"]["uid"])) for (ns, name), o in self.qualifications.items()
        }

    def patch_qualification_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        self.status_patches.append((namespace, name))
        obj = self.qualifications.get((namespace, name))
        if obj is None:
            return None
        merged = {**(obj.get("status") or {}), **status}
        obj["status"] = {k: v for k, v in merged.items() if v is not None}
        return copy.deepcopy(obj)

    def list_policies(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for o in self.policies.values()]

    def get_policy(self, name: str) -> dict[str, Any] | None:
        obj = self.policies.get(name)
        return copy.deepcopy(obj) if obj else None

    # -- jobs and pods
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.jobs.get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    def create_job(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        if manifest["metadata"]["namespace"] != namespace:
            raise JobRefused(400, "the namespace of the provided object does not match")
        key = (namespace, manifest["metadata"]["name"])
        if key in self.jobs:
            return copy.deepcopy(self.jobs[key])
        job = copy.deepcopy(manifest)
        job["metadata"]["uid"] = f"job-uid-{next(self._uids)}"
        job["status"] = {}
        self.jobs[key] = job
        return copy.deepcopy(job)

    def delete_job(self, namespace: str, name: str) -> None:
        self.deleted_jobs.append((namespace, name))
        self.jobs.pop((namespace, name), None)

    def jobs_of(self, namespace: str, qualification_uid: str) -> list[dict[str, Any]]:
        if self.denied:
            raise BenchmarkAccessDenied("listing benchmark Jobs: jobs.batch is forbidden")
        return [
            copy.deepcopy(j)
            for (ns, _), j in self.jobs.items()
            if ns == namespace
            and j["metadata"]["labels"].get(LABEL_QUALIFICATION) == qualification_uid
        ]

    def list_benchmark_jobs(self, namespace: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(j) for (ns, _), j in self.jobs.items() if ns == namespace]

    def pods_of_job(self, job: dict[str, Any], *, whole: bool = False) -> list[dict[str, Any]]:
        """As `Kube`'s: the cache's slim copies (no termination messages) unless `whole`."""
        uid = job["metadata"]["uid"]
        if whole:
            self.whole_pod_reads.append(job["metadata"]["name"])
        return [
            copy.deepcopy(p) if whole else slim_pod(p)
            for (ns, _), p in self.pods.items()
            if ns == job["metadata"]["namespace"]
            and p["metadata"].get("labels", {}).get(LABEL_CONTROLLER_UID) == uid
            and any(
                r.get("controller") and r.get("uid") == uid
                for r in p["metadata"].get("ownerReferences") or []
            )
        ]

    def get_pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.pvc_reads.append((namespace, name))
        obj = self.pvcs.get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    def progress_of(self, pod: dict[str, Any]) -> Progress | None:
        meta = pod["metadata"]
        return parse_progress(self.logs.get((meta["namespace"], meta["name"]), ""))

    def running_benchmark_owners(self, namespace: str) -> list[tuple[str, str]]:
        owners = []
        for (ns, _), p in self.pods.items():
            owner = qualification_of(p)
            if ns == namespace and (p.get("status") or {}).get("phase") == "Running" and owner:
                owners.append((owner[0], owner[1]))
        return owners

    def active_benchmarks(self, namespace: str) -> int:
        return sum(1 for (ns, _), j in self.jobs.items() if ns == namespace and not j["status"])

    def post_event(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        self.events.append((f"{meta['namespace']}/{meta['name']}", event_type, reason, message))
