"""Typed errors of the benchmark and the exit codes they map to. Pure: no I/O.

The exit codes and reasons are the contract's (`modelgrid_contract.reasons`): the operator's Job
pod-failure policy fails a qualification at once on BAD_INPUT (retrying cannot help) and retries
REFUSED (a busy or wrong GPU may be free or right on the next pod).
"""

from __future__ import annotations

from modelgrid_contract.reasons import REFUSAL_REASONS, ExitCode, Reason


class BenchError(Exception):
    """Base class: every error the benchmark raises on purpose."""

    exit_code: ExitCode = ExitCode.INTERNAL
    reason: str = Reason.INTERNAL_ERROR.value

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInputError(BenchError):
    """The request cannot be satisfied as stated: bad flags, unknown model, unreadable trace."""

    exit_code = ExitCode.BAD_INPUT
    reason = Reason.BAD_INPUT.value


class RefusedError(BenchError):
    """The measurement would not be trustworthy, so it is refused instead of reported."""

    exit_code = ExitCode.REFUSED

    def __init__(self, reason: Reason, message: str) -> None:
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"{reason} is not a refusal reason")
        super().__init__(message)
        self.reason = reason.value
        self.refusal = reason


class DeviceError(BenchError):
    """Any failure of the GPU management library (NVML), with the call that failed."""

    reason = Reason.DEVICE_ERROR.value

    def __init__(self, call: str, message: str, code: int | None = None) -> None:
        text = f"NVML {call} failed: {message}" + (
            f" (NVML error {code})" if code is not None else ""
        )
        super().__init__(text)
        self.call = call
        self.code = code


class BackendError(BenchError):
    """The inference engine failed (load, generate, or the HTTP endpoint)."""

    reason = Reason.BACKEND_ERROR.value


__all__ = [
    "BackendError",
    "BadInputError",
    "BenchError",
    "DeviceError",
    "ExitCode",
    "Reason",
    "RefusedError",
]
