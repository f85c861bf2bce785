"""Power sources behind one interface: NVML (real) and replay of a recorded trace. Does I/O.

A source hands the sampler per-GPU readings. Whether a source is simulated is a property of its
class, not a constructor argument, so a replayed measurement cannot be made to look real: the
result's `simulated` flag is derived from the source kind.
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
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


class LoadPhase(StrEnum):
    """What the session is doing, told to the source (a replay plays idle or load; NVML just
    measures whatever happens)."""

    IDLE = "idle"
    LOAD = "load"


class PowerSource(Protocol):
    kind: PowerSourceKind

    def set_phase(self, phase: LoadPhase, engine_processes: int) -> None: ...

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

    def set_phase(self, phase: LoadPhase, engine_processes: int) -> None:
        """A real GPU measures what runs on it; nothing to play."""
        del phase, engine_processes

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

    The trace is our own CSV (`t_s,gpu,power_w,power_avg_w,energy_j,...`). A replay answers to
    load as a GPU does: while the session is idle it plays the recording's idle level (its side
    JSON's `idle_w`, or the recorded idle baseline of an evidence directory) with 0 % utilisation;
    under load it plays the recorded load (an evidence directory's runs only) at the recorded
    `load_util_pct`, with the engine's processes on every GPU once the model is loaded. The
    energy counter keeps counting across phases and loops so that it stays monotone, and keeps
    the recording's update period.
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
        load_spans = meta.get("load_spans")
        tracks: list[_GpuTrack] = []
        for g in sorted({int(x) for x in cols["gpu"]}):
            m = cols["gpu"] == g
            if isinstance(load_spans, list) and load_spans:
                inside = np.zeros(m.size, dtype=bool)
                for lo, hi in load_spans:
                    inside |= (cols["t_s"] >= lo) & (cols["t_s"] <= hi)
                m &= inside
            if np.count_nonzero(m) < 2:
                raise BadInputError(f"replay trace {csv_path} has fewer than 2 rows for GPU {g}")
            tracks.append(
                _GpuTrack(
                    _contiguous_t(cols["t_s"][m]),
                    cols["power_w"][m],
                    cols["power_avg_w"][m],
                    _monotone_counter(cols["energy_j"][m]),
                )
            )
        if not tracks:
            raise BadInputError(f"replay trace {csv_path} is empty")
        want = gpus or len(tracks)
        # More GPUs than recorded: reuse recorded tracks in turn (still simulated).
        self._tracks = [tracks[i % len(tracks)] for i in range(want)]
        idle = meta.get("idle_w")
        self._idle_w = float(idle) if isinstance(idle, int | float) else None
        util = meta.get("load_util_pct", DEFAULT_REPLAY_UTIL_PCT)
        self._load_util_pct = float(util) if isinstance(util, int | float) else 0.0
        update = meta.get("counter_update_s", DEFAULT_COUNTER_UPDATE_S)
        self._update_s = float(update) if isinstance(update, int | float) else 0.1
        self._lock = threading.Lock()
        # Idle until the session says otherwise, as a GPU before its model is loaded.
        self._phase_name = LoadPhase.IDLE
        self._engine_processes = 0
        self._phase_t0_ns = time.monotonic_ns()
        self._last_load_ns = self._phase_t0_ns - int(10 * UTIL_SAMPLE_PERIOD_S * 1e9)
        self._offsets = [float(tr.energy_j[0]) for tr in self._tracks]

    def set_phase(self, phase: LoadPhase, engine_processes: int) -> None:
        """Switch between the idle level and the recorded load, keeping the counter monotone."""
        with self._lock:
            now = time.monotonic_ns()
            # Carry the energy played so far, not the counter's last step, so that no energy
            # is lost at a switch (a real counter's steps only delay it).
            self._offsets = [self._energy(i, now, stepped=False) for i in range(len(self._tracks))]
            if self._phase_name is LoadPhase.LOAD:
                self._last_load_ns = now
            self._phase_name = phase
            self._phase_t0_ns = now
            self._engine_processes = max(engine_processes, 0)

    def _elapsed_s(self, now_ns: int) -> float:
        return (now_ns - self._phase_t0_ns) / 1e9

    def _idle(self) -> bool:
        return self._phase_name is LoadPhase.IDLE and self._idle_w is not None

    def _position(self, track: _GpuTrack, now_ns: int) -> tuple[int, int]:
        elapsed = self._elapsed_s(now_ns)
        span = float(track.t_s[-1] - track.t_s[0])
        loops = int(elapsed // span)
        pos = track.t_s[0] + (elapsed - loops * span)
        idx = int(np.searchsorted(track.t_s, pos, side="right") - 1)
        return loops, max(idx, 0)

    def _energy(self, i: int, now_ns: int, *, stepped: bool = True) -> float:
        """Counter value of GPU i now: the phase's offset plus what the phase played so far
        (in the counter's update steps, or exactly with `stepped=False`)."""
        if self._idle():
            elapsed = self._elapsed_s(now_ns)
            if stepped:
                elapsed = float(np.floor(elapsed / self._update_s)) * self._update_s
            return self._offsets[i] + float(self._idle_w or 0.0) * elapsed
        tr = self._tracks[i]
        loops, idx = self._position(tr, now_ns)
        per_loop = float(tr.energy_j[-1] - tr.energy_j[0])
        return self._offsets[i] + float(tr.energy_j[idx] - tr.energy_j[0]) + loops * per_loop

    def info(self) -> PowerSourceInfo:
        notes = ["simulated: power readings are replayed from a recorded trace, not measured"]
        if self._idle_w is None:
            notes.append(
                "the replayed trace has no idle level (idle_w), so the idle baseline replays load"
            )
        return PowerSourceInfo(
            kind=self.kind,
            detail=f"replay of {self._path}",
            instant_power_field=True,
            energy_counter=True,
            notes=notes,
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
        with self._lock:
            now = time.monotonic_ns()
            for i, tr in enumerate(self._tracks):
                energy = self._energy(i, now)
                if self._idle():
                    p = pa = float(self._idle_w or 0.0)
                else:
                    _, idx = self._position(tr, now)
                    p, pa = float(tr.power_w[idx]), float(tr.power_avg_w[idx])
                out.append(FastReading(i, p, pa, energy, None, None))
        return out

    def read_slow(self) -> list[SlowReading]:
        nan = float("nan")
        with self._lock:
            # NVML's utilisation covers up to the last second: load that just ended still shows.
            recent = (time.monotonic_ns() - self._last_load_ns) / 1e9 < UTIL_SAMPLE_PERIOD_S
            # The session, not the recording, decides whether the GPU is busy: a recording
            # without an idle level still plays load power, but the GPU reads idle.
            busy = self._phase_name is LoadPhase.LOAD or recent
            util = self._load_util_pct if busy else 0.0
            procs = self._engine_processes
        # No throttling in a replay; the processes are the engine's (simulated), none other.
        return [
            SlowReading(i, nan, nan, nan, 0, nan, nan, nan, util, procs)
            for i in range(len(self._tracks))
        ]

    def close(self) -> None:
        return None


DEFAULT_REPLAY_UTIL_PCT = 95.0
#: The longest period NVML's utilisation figure covers.
UTIL_SAMPLE_PERIOD_S = 1.0
DEFAULT_COUNTER_UPDATE_S = 0.1


def _contiguous_t(t_s: np.ndarray) -> np.ndarray:
    """Times of rows cut from several runs, re-based so that they follow one another."""
    if t_s.size < 2:
        return t_s
    d = np.diff(t_s)
    step = float(np.median(d))
    d = np.where(d > 4 * step, step, d)
    return np.concatenate(([0.0], np.cumsum(d)))


def _monotone_counter(energy_j: np.ndarray) -> np.ndarray:
    """A counter cut from several runs: drop the jumps between them, keep the steps inside."""
    if energy_j.size < 2 or not np.all(np.isfinite(energy_j)):
        return energy_j
    d = np.diff(energy_j)
    typical = float(np.median(d[d > 0])) if np.any(d > 0) else 0.0
    d = np.where((d < 0) | (d > 50 * max(typical, 1e-9)), typical, d)
    return np.concatenate(([energy_j[0]], energy_j[0] + np.cumsum(d)))


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
        recorded: dict[str, object] = {}
        if ev.is_file():
            doc = json.loads(ev.read_text())
            gpus = doc.get("meta", {}).get("environment", {}).get("gpus", [])
            if gpus:
                recorded["gpu_name"] = gpus[0].get("name")
            recorded.update(_recorded_phases(csv, doc.get("timeline") or {}))
        return csv, recorded
    if not p.is_file():
        raise BadInputError(f"replay trace {path} does not exist")
    side = p.with_suffix(".json")
    return p, (json.loads(side.read_text()) if side.is_file() else {})


def _recorded_phases(csv_path: Path, timeline: dict[str, object]) -> dict[str, object]:
    """An evidence directory's idle level (its baseline's mean power) and load spans (runs)."""
    out: dict[str, object] = {}
    runs = timeline.get("runs")
    if isinstance(runs, list) and runs:
        out["load_spans"] = [
            (float(r["start_s"]), float(r["end_s"])) for r in runs if isinstance(r, dict)
        ]
    base = timeline.get("baseline")
    if isinstance(base, dict):
        cols = _read_columns(csv_path)
        m = (cols["t_s"] >= float(base["start_s"])) & (cols["t_s"] <= float(base["end_s"]))
        m &= cols["gpu"] == 0
        p = cols["power_w"][m]
        p = p[np.isfinite(p)]
        if p.size:
            out["idle_w"] = float(np.mean(p))
    return out


def open_source(spec: str, *, gpu_name: str | None = None, gpus: int | None = None) -> PowerSource:
    """`nvml` or `replay:PATH` (PATH may be `builtin:NAME`, a CSV or an evidence directory)."""
    if spec == "nvml":
        return NvmlSource.open()
    if spec.startswith("replay:"):
        return ReplaySource(spec[len("replay:") :], gpu_name=gpu_name, gpus=gpus)
    raise BadInputError(f"unknown power source {spec!r}: use 'nvml' or 'replay:PATH'")


def default_source_spec() -> str:
    return os.environ.get("MODELGRID_POWER_SOURCE", "nvml")
