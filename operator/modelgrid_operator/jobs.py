"""The benchmark Job for one generation of a ModelQualification. Pure: builds a manifest.

One Job per generation and attempt, with a deterministic name (the qualification's name,
generation, attempt and a hash of its uid), so a restarted operator finds the Job it made
instead of making another. Jobs live in the operator's benchmark namespace, never in the
tenant's (docs/architecture.md, "Trust model"): a tenant can neither create nor change pods
there. Owner references cannot cross namespaces, so the Job names its qualification in labels
and annotations and the operator deletes it when the qualification goes. The pod runs the
benchmark image under the Pod Security "restricted" profile, asks for the GPUs, selects the
GPU product, tolerates the GPU taint, echoes the Job's nonce in its result and reports through
its termination message. The benchmark's command line is built in `jobargs`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from modelgrid_contract.engines import EngineName
from modelgrid_contract.reasons import ExitCode
from modelgrid_contract.result import WorkDoneFloors
from modelgrid_operator.api import GROUP, CacheSource, PvcSource, QualificationSpec
from modelgrid_operator.jobargs import MODEL_DIR, RESULTS_DIR, benchmark_args
from modelgrid_operator.policy import EndpointAccess

GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
#: The owner's uid as a label (a name may be 253 characters; a label value only 63) and its
#: name as an annotation, so watches select by label and map back to the owner by name.
LABEL_QUALIFICATION = f"{GROUP}/qualification-uid"
LABEL_QUALIFICATION_NAMESPACE = f"{GROUP}/qualification-namespace"
ANNOTATION_QUALIFICATION = f"{GROUP}/qualification"
ANNOTATION_QUALIFICATION_NAMESPACE = f"{GROUP}/qualification-namespace"
#: The nonce the Job's result must echo; only the operator (and the namespace's admins) can
#: read or write Jobs in the benchmark namespace.
ANNOTATION_NONCE = f"{GROUP}/job-nonce"
#: The Job controller's own label on its pods (the Job's uid), set by the apiserver's Job
#: strategy and immutable: the operator selects pods by it and checks the owner reference too.
LABEL_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
LABEL_GENERATION = f"{GROUP}/generation"
LABEL_ATTEMPT = f"{GROUP}/attempt"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
MANAGED_BY = "modelgrid-operator"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
CONTAINER = "benchmark"
#: The benchmark's entrypoint, named in full for engine images (whose own entrypoint is the
#: engine's).
BENCH_COMMAND = ("python", "-m", "modelgrid_bench")
#: Shared memory for an engine's tensor-parallel workers (NCCL), which a container's 64 MiB
#: default cannot hold.
ENGINE_SHM_LIMIT = "16Gi"


#: Where benchmark Jobs run unless the chart names another namespace.
DEFAULT_BENCHMARK_NAMESPACE = "modelgrid-benchmarks"
#: Where a kept-evidence Job says its evidence goes (claim and directory in it).
ANNOTATION_EVIDENCE_CLAIM = f"{GROUP}/evidence-claim"
ANNOTATION_EVIDENCE_PATH = f"{GROUP}/evidence-path"
#: The pod's own name, which the evidence mount's subPathExpr ends in: every pod of a Job (a
#: retry after a crash) writes its own directory, so no pod overwrites another's files.
POD_NAME_VAR = "POD_NAME"
#: A PersistentVolumeClaim in the benchmark namespace lists the tenant namespaces that may use
#: it as a model source here (comma-separated, or "*" for all).
ANNOTATION_SHARED_WITH = f"{GROUP}/shared-with"


@dataclass(frozen=True)
class JobSettings:
    namespace: str = DEFAULT_BENCHMARK_NAMESPACE
    image: str = "ghcr.io/firmus/modelgrid-bench:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    backoff_limit: int = 2
    ttl_seconds_after_finished: int = 86400
    cpu_request: str = "2"
    memory_request: str = "16Gi"
    memory_limit: str = "64Gi"
    service_account: str | None = None
    #: An image per serving engine (the engine with the benchmark installed, see
    #: benchmark-image/engines/); "" leaves that engine unavailable. A custom engine runs in
    #: the benchmark image unless one is named.
    engine_images: tuple[tuple[str, str], ...] = (
        ("vllm", "ghcr.io/firmus/modelgrid-bench-vllm:0.1.0"),
        ("sglang", "ghcr.io/firmus/modelgrid-bench-sglang:0.1.0"),
        ("tgi", "ghcr.io/firmus/modelgrid-bench-tgi:0.1.0"),
        ("custom", ""),
    )
    #: The PersistentVolumeClaim (in the benchmark namespace) that keeps every benchmark's
    #: evidence; "" keeps none (the evidence lives in the pod's scratch space).
    evidence_claim: str = ""
    #: Per tenant namespace, another claim (its own retention or quota); "" for a namespace
    #: turns kept evidence off there.
    evidence_claims: tuple[tuple[str, str], ...] = ()

    def evidence_claim_for(self, namespace: str) -> str:
        """The claim that keeps the evidence of `namespace`'s benchmarks ("" when none)."""
        return dict(self.evidence_claims).get(namespace, self.evidence_claim)

    def engine_image(self, engine: EngineName) -> str:
        """The image a server source's pod runs for `engine` ("" when there is none)."""
        image = dict(self.engine_images).get(engine.value, "")
        return image or (self.image if engine is EngineName.CUSTOM else "")


def job_name(name: str, uid: str, generation: int, attempt: int = 0) -> str:
    """Unique across tenants' namespaces: the digest covers the qualification's uid (a
    collision is also caught at creation: a Job of that name for another uid is refused)."""
    digest = hashlib.sha256(f"{uid}:{generation}:{attempt}".encode()).hexdigest()[:10]
    suffix = f"-g{generation}" + (f"r{attempt}" if attempt else "") + f"-{digest}"
    return name[: 63 - len(suffix)].rstrip("-.") + suffix


def evidence_dir(namespace: str, name: str, uid: str, generation: int, attempt: int) -> str:
    """The directory, inside the evidence claim, of one attempt of one generation of one
    qualification (the uid keeps a deleted and recreated namesake apart); each of the
    attempt's pods writes a subdirectory named after itself."""
    return f"{namespace}/{name}/{uid}/g{generation}-a{attempt}"


def _weights(spec: QualificationSpec) -> PvcSource | CacheSource | None:
    src = spec.model.source
    if src.server is not None:
        return src.server.model.pvc or src.server.model.cache
    return src.pvc or src.cache


def model_claims(spec: QualificationSpec) -> list[str]:
    """The PersistentVolumeClaims (in the benchmark namespace) the model is read from."""
    weights = _weights(spec)
    return [weights.claim_name] if weights is not None else []


def job_nonce(job: dict[str, Any]) -> str | None:
    """The nonce a Job was created with (None for a Job that has none: it proves nothing)."""
    value = ((job.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_NONCE)
    return str(value) if value else None


def qualification_of(job: dict[str, Any]) -> tuple[str, str, str] | None:
    """(namespace, name, uid) of the qualification a benchmark Job was made for."""
    meta = job.get("metadata") or {}
    labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
    ns = notes.get(ANNOTATION_QUALIFICATION_NAMESPACE) or labels.get(LABEL_QUALIFICATION_NAMESPACE)
    name, uid = notes.get(ANNOTATION_QUALIFICATION), labels.get(LABEL_QUALIFICATION)
    if not (ns and name and uid):
        return None
    return str(ns), str(name), str(uid)


def build_job(
    *,
    name: str,
    namespace: str,
    uid: str,
    generation: int,
    spec: QualificationSpec,
    settings: JobSettings,
    nonce: str,
    attempt: int = 0,
    floors: WorkDoneFloors | None = None,
    endpoint_access: EndpointAccess | None = None,
    evidence_claim: str = "",
) -> dict[str, Any]:
    """The Job for (`namespace`/`name`, `uid`) at `generation` and `attempt`, created in
    `settings.namespace`, whose result must echo `nonce`. With `evidence_claim` the results
    directory is that claim's `evidence_dir(...)/<pod>` (read-write, this pod's only), so the
    evidence outlives the pod; without, scratch space."""
    hw = spec.hardware
    labels = {
        LABEL_QUALIFICATION: uid,
        LABEL_QUALIFICATION_NAMESPACE: namespace,
        LABEL_GENERATION: str(generation),
        LABEL_ATTEMPT: str(attempt),
        LABEL_MANAGED: MANAGED_BY,
        "app.kubernetes.io/name": "modelgrid-benchmark",
        "app.kubernetes.io/part-of": "modelgrid",
    }
    job_labels = dict(labels)
    if spec.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    node_selector = {PRODUCT_LABEL: hw.gpu_product, **hw.node_selector}
    tolerations: list[dict[str, Any]] = [
        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    ]
    tolerations += [t.model_dump(by_alias=True, exclude_none=True) for t in hw.tolerations]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    env: list[dict[str, Any]] = [
        {"name": "MODELGRID_TERMINATION_LOG", "value": "/dev/termination-log"},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "HOME", "value": "/tmp"},
    ]
    evidence_path = evidence_dir(namespace, name, uid, generation, attempt)
    if evidence_claim:
        volumes.insert(
            0, {"name": "results", "persistentVolumeClaim": {"claimName": evidence_claim}}
        )
        mounts.insert(
            0,
            {
                "name": "results",
                "mountPath": RESULTS_DIR,
                "subPathExpr": f"{evidence_path}/$({POD_NAME_VAR})",
            },
        )
        env.append(
            {"name": POD_NAME_VAR, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        )
    else:
        volumes.insert(0, {"name": "results", "emptyDir": {}})
        mounts.insert(0, {"name": "results", "mountPath": RESULTS_DIR})
    weights = _weights(spec)
    if weights is not None:
        volumes.append(
            {
                "name": "model",
                "persistentVolumeClaim": {"claimName": weights.claim_name, "readOnly": True},
            }
        )
        mounts.append({"name": "model", "mountPath": MODEL_DIR, "readOnly": True})
    if isinstance(weights, CacheSource):
        env.append({"name": "HF_HOME", "value": f"{MODEL_DIR}/hf"})
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    server = spec.model.source.server
    image = settings.image
    if server is not None:
        image = settings.engine_image(server.engine)
        volumes.append(
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": ENGINE_SHM_LIMIT}}
        )
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        # the engine writes its compile caches under HOME (/tmp): the root filesystem is
        # read-only
        env.append({"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"})
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": benchmark_args(spec, floors, nonce, endpoint_access),
        "env": env,
        "resources": {
            "requests": {
                "cpu": settings.cpu_request,
                "memory": settings.memory_request,
                GPU_RESOURCE: str(hw.gpu_count),
            },
            "limits": {"memory": settings.memory_limit, GPU_RESOURCE: str(hw.gpu_count)},
        },
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        # The benchmark writes its own JSON there; a crash before it can still be diagnosed.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if server is not None:
        container["command"] = list(BENCH_COMMAND)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "nodeSelector": node_selector,
        "tolerations": tolerations,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    notes = {ANNOTATION_QUALIFICATION: name, ANNOTATION_QUALIFICATION_NAMESPACE: namespace}
    if evidence_claim:
        notes = {
            **notes,
            ANNOTATION_EVIDENCE_CLAIM: evidence_claim,
            ANNOTATION_EVIDENCE_PATH: evidence_path,
        }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, uid, generation, attempt),
            "namespace": settings.namespace,
            "labels": job_labels,
            "annotations": {**notes, ANNOTATION_NONCE: nonce},
        },
        "spec": {
            "backoffLimit": settings.backoff_limit,
            "activeDeadlineSeconds": spec.timeout_seconds,
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            # Kueue admits a suspended Job when a queue is named; otherwise it starts at once.
            "suspend": bool(spec.queue_name),
            "podFailurePolicy": {
                "rules": [
                    {  # bad input cannot get better by retrying
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "In",
                            "values": [int(ExitCode.BAD_INPUT)],
                        },
                    },
                    {  # evictions and preemptions are not the benchmark's failure
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {
                "metadata": {"labels": labels, "annotations": notes},
                "spec": pod_spec,
            },
        },
    }
