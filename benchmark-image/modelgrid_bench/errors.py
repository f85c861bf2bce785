"""Typed errors and the process exit codes they map to. Pure: no I/O.

The exit codes are part of the contract with the operator: its Job's podFailurePolicy fails a
qualification at once on BAD_INPUT (retrying cannot help), and retries REFUSED (a busy or wrong
GPU may be free or right on the next pod).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    BAD_INPUT = 2
    REFUSED = 3


class RefusalReason(StrEnum):
    NO_GPU = "NoGPU"
    WRONG_GPU = "WrongGPU"
    CONTENTION = "Contention"
    GPU_NOT_IDLE = "GPUNotIdle"


class BenchError(Exception):
    """Base class: every error the benchmark raises on purpose."""

    exit_code: ExitCode = ExitCode.INTERNAL
    reason: str = "InternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInputError(BenchError):
    """The request cannot be satisfied as stated: bad flags, unknown model, unreadable trace."""

    exit_code = ExitCode.BAD_INPUT
    reason = "BadInput"


class RefusedError(BenchError):
    """The measurement would not be trustworthy, so it is refused instead of reported."""

    exit_code = ExitCode.REFUSED

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason.value
        self.refusal = reason


class DeviceError(BenchError):
    """Any failure of the GPU management library (NVML), with the call that failed."""

    reason = "DeviceError"

    def __init__(self, call: str, message: str, code: int | None = None) -> None:
        text = f"NVML {call} failed: {message}" + (
            f" (NVML error {code})" if code is not None else ""
        )
        super().__init__(text)
        self.call = call
        self.code = code


class BackendError(BenchError):
    """The inference engine failed (load, generate, or the HTTP endpoint)."""

    reason = "BackendError"
