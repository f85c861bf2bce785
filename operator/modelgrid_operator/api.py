"""Typed views of the ModelQualification spec, and the API's names (group, version). Pure.

`crds/` is the single source of the API; these models mirror the parts the operator reads, and
tests/unit/test_api_drift.py fails when a field here is missing from (or bounded differently
than) the CRD schema. The apiserver applies the CRD's defaults, so every default here repeats
the CRD's and only matters for objects built without the apiserver (the `verdict` CLI, tests).
The TierPolicy spec is in `policy`, the status words and the status schema in `status`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationError

from modelgrid_contract.engines import (
    DEFAULT_ENGINE_PORT,
    DEFAULT_STARTUP_TIMEOUT_S,
    MAX_ENGINE_ARGS,
    MAX_STARTUP_TIMEOUT_S,
    EngineName,
)
from modelgrid_contract.workload import Workload
from modelgrid_operator.apimodel import ApiModel

GROUP = "modelgrid.firmus.ai"
VERSION = "v1alpha1"
MQ_PLURAL = "modelqualifications"
TP_PLURAL = "tierpolicies"


def validation_message(exc: ValidationError, limit: int = 3) -> str:
    """A pydantic error in a person's words: `field: what is wrong` for the first few errors,
    without pydantic's input echo or its "For further information visit" link."""
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


class PvcSource(ApiModel):
    claim_name: str = Field(alias="claimName")
    path: str = "/"


class CacheSource(ApiModel):
    claim_name: str = Field(alias="claimName")
    model_id: str = Field(alias="modelId")


class EndpointSource(ApiModel):
    url: str
    served_model: str | None = Field(default=None, alias="servedModel")


class RandomWeightsSource(ApiModel):
    architecture: str


class ServerWeights(ApiModel):
    """Where a server source's engine reads the model: exactly one of pvc and cache."""

    pvc: PvcSource | None = None
    cache: CacheSource | None = None


class ServerSource(ApiModel):
    """A serving engine the benchmark starts in its own pod, on the GPUs it measures."""

    engine: EngineName
    model: ServerWeights = Field(default_factory=ServerWeights)
    args: list[str] = Field(default_factory=list, max_length=MAX_ENGINE_ARGS)
    command: list[str] = Field(default_factory=list, max_length=MAX_ENGINE_ARGS)
    port: int = Field(DEFAULT_ENGINE_PORT, ge=1024, le=65535)
    startup_timeout_seconds: int = Field(
        DEFAULT_STARTUP_TIMEOUT_S, ge=10, le=MAX_STARTUP_TIMEOUT_S, alias="startupTimeoutSeconds"
    )
    served_model: str | None = Field(default=None, alias="servedModel")

    def claim(self) -> str | None:
        """The PersistentVolumeClaim the weights are read from."""
        if self.model.pvc is not None:
            return self.model.pvc.claim_name
        if self.model.cache is not None:
            return self.model.cache.claim_name
        return None


class ModelSource(ApiModel):
    pvc: PvcSource | None = None
    cache: CacheSource | None = None
    endpoint: EndpointSource | None = None
    random_weights: RandomWeightsSource | None = Field(default=None, alias="randomWeights")
    server: ServerSource | None = None


class Model(ApiModel):
    name: str
    version: str | None = None
    architecture: str | None = None
    parameter_count: str | None = Field(default=None, alias="parameterCount")
    framework: str | None = None
    quantization: str | None = None
    source: ModelSource


class Claims(ApiModel):
    avg_power_w: Annotated[float, Field(gt=0, le=10000)] | None = Field(None, alias="avgPowerW")
    peak_power_w: Annotated[float, Field(gt=0, le=10000)] | None = Field(None, alias="peakPowerW")
    power_cv: Annotated[float, Field(ge=0, le=1)] | None = Field(None, alias="powerCV")
    joules_per_token: Annotated[float, Field(gt=0, le=1000)] | None = Field(
        None, alias="joulesPerToken"
    )
    tokens_per_joule: Annotated[float, Field(gt=0, le=100000)] | None = Field(
        None, alias="tokensPerJoule"
    )
    target_tier: Annotated[int, Field(ge=1, le=10)] | None = Field(None, alias="targetTier")


class Toleration(ApiModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, alias="tolerationSeconds")


class Hardware(ApiModel):
    gpu_product: str = Field("NVIDIA-H200", alias="gpuProduct")
    gpu_count: Annotated[int, Field(ge=1, le=8)] = Field(1, alias="gpuCount")
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[Toleration] = Field(default_factory=list)


class PolicyRef(ApiModel):
    name: str


class Declarations(ApiModel):
    on_h200_infrastructure: bool = Field(False, alias="onH200Infrastructure")
    follows_methodology: bool = Field(False, alias="followsMethodology")
    typical_workload: bool = Field(False, alias="typicalWorkload")
    no_manipulation: bool = Field(False, alias="noManipulation")
    accepts_verification: bool = Field(False, alias="acceptsVerification")

    @property
    def all_checked(self) -> bool:
        return all(
            (
                self.on_h200_infrastructure,
                self.follows_methodology,
                self.typical_workload,
                self.no_manipulation,
                self.accepts_verification,
            )
        )


class Attestation(ApiModel):
    organization: str | None = None
    contact: str | None = None
    date_tested: str | None = Field(None, alias="dateTested")
    account_id: str | None = Field(None, alias="accountId")
    signature: str | None = None
    signed_date: str | None = Field(None, alias="signedDate")
    declarations: Declarations = Field(default_factory=Declarations)


class QualificationSpec(ApiModel):
    model: Model
    claims: Claims = Field(default_factory=Claims)
    workload: Workload = Field(default_factory=Workload)
    hardware: Hardware = Field(default_factory=Hardware)
    sampling_interval_ms: Annotated[int, Field(ge=5, le=1000)] = Field(
        25, alias="samplingIntervalMs"
    )
    policy_ref: PolicyRef | None = Field(None, alias="policyRef")
    timeout_seconds: Annotated[int, Field(ge=60, le=86400)] = Field(3600, alias="timeoutSeconds")
    progress_timeout_seconds: Annotated[int, Field(ge=30, le=86400)] = Field(
        900, alias="progressTimeoutSeconds"
    )
    reverify_after: str = Field("365d", alias="reverifyAfter")
    queue_name: str | None = Field(None, alias="queueName")
    attestation: Attestation | None = None
