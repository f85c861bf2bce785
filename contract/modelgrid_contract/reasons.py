"""The one vocabulary of reasons and exit codes that crosses the wire. Pure: no I/O.

A reason is a stable CamelCase word. The benchmark puts one in a refusal or a failure message,
the operator puts one in a rejection of a result, and both end up in a qualification's
conditions and events, so they are defined once here and nowhere else.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """Process exit codes of the benchmark; the operator's Job pod-failure policy reads them.

    BAD_INPUT fails a qualification at once (retrying cannot help); REFUSED is retried (a busy
    or wrong GPU may be free or right on the next pod).
    """

    OK = 0
    INTERNAL = 1
    BAD_INPUT = 2
    REFUSED = 3


class Reason(StrEnum):
    """Why a measurement was refused, failed, or rejected."""

    # The benchmark refused its own measurement (exit 3).
    NO_GPU = "NoGPU"
    WRONG_GPU = "WrongGPU"
    CONTENTION = "Contention"
    GPU_NOT_IDLE = "GPUNotIdle"
    NO_LOAD_ON_GPU = "NoLoadOnGPU"
    # The benchmark could not produce a result.
    BAD_INPUT = "BadInput"
    INTERNAL_ERROR = "InternalError"
    DEVICE_ERROR = "DeviceError"
    BACKEND_ERROR = "BackendError"
    #: the serving engine did not start or answer its health endpoint within its start-up time
    ENGINE_NOT_HEALTHY = "EngineNotHealthy"
    #: the serving engine exited while the benchmark drove it
    ENGINE_CRASHED = "EngineCrashed"
    #: the benchmark stopped reporting progress for longer than the operator allows
    NO_PROGRESS = "NoProgress"
    # The termination message itself cannot be read.
    EMPTY_RESULT = "EmptyResult"
    OVERSIZED_RESULT = "OversizedResult"
    MALFORMED_RESULT = "MalformedResult"
    UNKNOWN_SCHEMA = "UnknownSchemaVersion"
    INCONSISTENT_RESULT = "InconsistentResult"
    #: the result does not echo the nonce its Job was given: it was measured for another Job
    NOT_BOUND = "ResultNotBound"
    # A readable result that cannot be priced.
    NOT_OK = "NotOk"
    SIMULATED = "SimulatedResult"
    WORKLOAD_MISMATCH = "WorkloadMismatch"
    NO_TIER_METRIC = "NoTierMetric"
    NO_INTERVAL = "NoConfidenceInterval"
    DISQUALIFYING_FLAG = "DisqualifyingFlag"
    #: served from outside the benchmark pod, where the policy requires the engine in it
    ENGINE_IN_POD_REQUIRED = "EngineInPodRequired"


#: Failures of the serving engine a `server` source starts: the qualification's reason.
ENGINE_REASONS = frozenset({Reason.ENGINE_NOT_HEALTHY, Reason.ENGINE_CRASHED})

#: Reasons a benchmark may put in a refusal (its exit code 3).
REFUSAL_REASONS = frozenset(
    {
        Reason.NO_GPU,
        Reason.WRONG_GPU,
        Reason.CONTENTION,
        Reason.GPU_NOT_IDLE,
        Reason.NO_LOAD_ON_GPU,
    }
)
