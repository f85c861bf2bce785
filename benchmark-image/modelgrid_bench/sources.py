"""Power sources behind one interface: NVML (real) and replay of a recorded trace. Does I/O.

A source hands the sampler per-GPU readings. Whether a source is simulated is a property of its
class, not a constructor argument, so a replayed measurement cannot be made to look real: the
result's `simulated` flag is derived from the source kind.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

from modelgrid_bench.device import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    FastReading,
    NvmlDevices,
    SlowReading,
)
from modelgrid_bench.errors import BadInputError, DeviceError, RefusedError
from modelgrid_contract.reasons import Reason
from modelgrid_contract.result import GpuInfo, PowerSourceInfo, PowerSourceKind

BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class SystemInfo:
    driver_version: str
    cuda_driver_version: str
    nvml_version: str


class PowerSource(Protocol):
    kind: PowerSourceKind

    def info(self) -> PowerSourceInfo: ...

    def system(self) -> SystemInfo: ...

    def gpus(self) -> list[GpuInfo]: ...

    def read_fast(self) -> list[FastReading]: ...

    def read_slow(self) -> list[SlowReading]: ...

    def close(self) -> None: ...


class NvmlSource:
    """Real readings from every GPU visible to this process."""

    kind = PowerSourceKind.NVML

    def __init__(self, devices: NvmlDevices) -> None:
        self._dev = devices

    @classmethod
    def open(cls) -> NvmlSource:
        try:
            devices = NvmlDevices.open()
        except DeviceError as exc:
            if exc.code in (NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_DRIVER_NOT_LOADED) or (
                exc.call == "import"
            ):
                raise RefusedError(
                    Reason.NO_GPU,
                    f"no NVIDIA GPU is usable here ({exc.message}); "
                    "pass --power-source replay:builtin for a simulated run",
                ) from exc
            raise
        if devices.count == 0:
            devices.close()
            raise RefusedError(
                Reason.NO_GPU,
                "NVML found no GPU visible to this process (check NVIDIA_VISIBLE_DEVICES and "
                "the nvidia.com/gpu request); pass --power-source replay:builtin to simulate",
            )
        return cls(devices)

    def info(self) -> PowerSourceInfo:
        d = self._dev
        return PowerSourceInfo(
            kind=self.kind,
            detail=f"NVML, {d.count} GPU(s)",
            instant_power_field=all(d.instant_supported),
            energy_counter=all(d.energy_supported),
            notes=list(d.notes),
        )

    def system(self) -> SystemInfo:
        return SystemInfo(
            self._dev.driver_version(), self._dev.cuda_driver_version(), self._dev.nvml_version()
        )

    def gpus(self) -> list[GpuInfo]:
        out = []
        for i in range(self._dev.count):
            ident = self._dev.identity(i)
            out.append(
                GpuInfo(
                    index=ident.index,
                    name=ident.name,
                    uuid=ident.uuid,
                    vbios_version=ident.vbios_version,
                    power_limit_w=ident.power_limit_w,
                    memory_total_mib=ident.memory_total_mib,
                    mig_mode=ident.mig_mode,
                )
            )
        return out

    def read_fast(self) -> list[FastReading]:
        return [self._dev.read_fast(i) for i in range(self._dev.count)]

    def read_slow(self) -> list[SlowReading]:
        return [self._dev.read_slow(i) for i in range(self._dev.count)]

    def close(self) -> None:
        self._dev.close()


@dataclass(frozen=True)
class _GpuTrack:
    t_s: np.ndarray
    power_w: np.ndarray
    power_avg_w: np.ndarray
    energy_j: np.ndarray


class ReplaySource:
    """Plays a recorded trace back in real time, looping; every figure it yields is simulated.

    The trace is our own CSV (`t_s,gpu,power_w,power_avg_w,energy_j,...`). The energy counter keeps
    counting across loops so that it stays monotone, and keeps its recorded update steps.
    """

    kind = PowerSourceKind.REPLAY

    def __init__(
        self,
        path: str,
        *,
        gpu_name: str | None = None,
        gpus: int | None = None,
    ) -> None:
        self._path = path
        csv_path, meta = _resolve_trace(path)
        self._name = gpu_name or str(meta.get("gpu_name", "Replayed GPU"))
        cols = _read_columns(csv_path)
        missing = {"t_s", "gpu", "power_w", "energy_j"} - set(cols)
        if missing:
            raise BadInputError(f"replay trace {csv_path} lacks columns: {sorted(missing)}")
        if "power_avg_w" not in cols:
            cols["power_avg_w"] = np.full(cols["t_s"].size, np.nan)
        tracks: list[_GpuTrack] = []
        for g in sorted({int(x) for x in cols["gpu"]}):
            m = cols["gpu"] == g
            if np.count_nonzero(m) < 2:
                raise BadInputError(f"replay trace {csv_path} has fewer than 2 rows for GPU {g}")
            tracks.append(
                _GpuTrack(
                    cols["t_s"][m], cols["power_w"][m], cols["power_avg_w"][m], cols["energy_j"][m]
                )
            )
        if not tracks:
            raise BadInputError(f"replay trace {csv_path} is empty")
        want = gpus or len(tracks)
        # More GPUs than recorded: reuse recorded tracks in turn (still simulated).
        self._tracks = [tracks[i % len(tracks)] for i in range(want)]
        self._t0_ns = time.monotonic_ns()

    def _phase(self, track: _GpuTrack) -> tuple[int, int]:
        elapsed = (time.monotonic_ns() - self._t0_ns) / 1e9
        span = float(track.t_s[-1] - track.t_s[0])
        loops = int(elapsed // span)
        pos = track.t_s[0] + (elapsed - loops * span)
        idx = int(np.searchsorted(track.t_s, pos, side="right") - 1)
        return loops, max(idx, 0)

    def info(self) -> PowerSourceInfo:
        return PowerSourceInfo(
            kind=self.kind,
            detail=f"replay of {self._path}",
            instant_power_field=True,
            energy_counter=True,
            notes=["simulated: power readings are replayed from a recorded trace, not measured"],
        )

    def system(self) -> SystemInfo:
        return SystemInfo("replay", "replay", "replay")

    def gpus(self) -> list[GpuInfo]:
        return [
            GpuInfo(index=i, name=self._name, uuid=f"GPU-REPLAY-{i:02d}", mig_mode="disabled")
            for i in range(len(self._tracks))
        ]

    def read_fast(self) -> list[FastReading]:
        out = []
        for i, tr in enumerate(self._tracks):
            loops, idx = self._phase(tr)
            per_loop = float(tr.energy_j[-1] - tr.energy_j[0])
            energy = float(tr.energy_j[idx]) + loops * per_loop
            out.append(
                FastReading(
                    i, float(tr.power_w[idx]), float(tr.power_avg_w[idx]), energy, None, None
                )
            )
        return out

    def read_slow(self) -> list[SlowReading]:
        nan = float("nan")
        # A replay has no other processes and no throttling; zero processes keeps the
        # contention check meaningful (the engine is not on a real GPU).
        return [
            SlowReading(i, nan, nan, nan, 0, nan, nan, nan, 0.0, 0)
            for i in range(len(self._tracks))
        ]

    def close(self) -> None:
        return None


def _read_columns(path: Path) -> dict[str, np.ndarray]:
    try:
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            rows = [[float(v) for v in row] for row in reader if row]
    except (OSError, ValueError, StopIteration) as exc:
        raise BadInputError(f"cannot read replay trace {path}: {exc}") from exc
    data = np.array(rows, dtype=np.float64).reshape(-1, len(header))
    return {name: data[:, i] for i, name in enumerate(header)}


def _resolve_trace(path: str) -> tuple[Path, dict[str, object]]:
    """A trace CSV path, an evidence directory, or `builtin:NAME` shipped with the package."""
    if path.startswith(BUILTIN_PREFIX) or path == "builtin":
        name = path[len(BUILTIN_PREFIX) :] if path != "builtin" else ""
        name = name or "h200-decode"
        base = resources.files("modelgrid_bench") / "data"
        csv = Path(str(base / f"{name}.csv"))
        if not csv.is_file():
            raise BadInputError(f"no built-in replay trace named {name!r}")
        meta_file = csv.with_suffix(".json")
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        return csv, meta
    p = Path(path)
    if p.is_dir():
        csv = p / "trace.csv"
        ev = p / "evidence.json"
        meta = {}
        if ev.is_file():
            doc = json.loads(ev.read_text())
            gpus = doc.get("meta", {}).get("environment", {}).get("gpus", [])
            if gpus:
                meta["gpu_name"] = gpus[0].get("name")
        return csv, meta
    if not p.is_file():
        raise BadInputError(f"replay trace {path} does not exist")
    side = p.with_suffix(".json")
    return p, (json.loads(side.read_text()) if side.is_file() else {})


def open_source(spec: str, *, gpu_name: str | None = None, gpus: int | None = None) -> PowerSource:
    """`nvml` or `replay:PATH` (PATH may be `builtin:NAME`, a CSV or an evidence directory)."""
    if spec == "nvml":
        return NvmlSource.open()
    if spec.startswith("replay:"):
        return ReplaySource(spec[len("replay:") :], gpu_name=gpu_name, gpus=gpus)
    raise BadInputError(f"unknown power source {spec!r}: use 'nvml' or 'replay:PATH'")


def default_source_spec() -> str:
    return os.environ.get("MODELGRID_POWER_SOURCE", "nvml")
