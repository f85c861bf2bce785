"""The rules evidence must obey before it is analysed. Pure: arrays and records in, no I/O.

`modelgrid_bench.evidence` parses the files and calls these checks; each violation raises
`BadInputError` with one line naming the file, the row (1-based data row: row 1 is the line after
the header) or the JSON path, and the column or field. docs/measurement.md ("Evidence rules")
lists the rules; keep the two in step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from modelgrid_bench.errors import BadInputError
from modelgrid_bench.records import Interval, RequestRecord, RunRecord, SessionMeta, Timeline
from modelgrid_bench.stats import FloatArray

#: Physical bound on one GPU's power, W: no accelerator draws this (an H200 is rated 700 W, the
#: largest parts about 1.2-1.4 kW), so a reading above it is a unit or parsing error.
MAX_POWER_W = 5000.0
#: Largest GPU index accepted (NVML enumerates far fewer devices per node).
MAX_GPU_INDEX = 65535

TRACE_FILE = "trace.csv"
TELEMETRY_FILE = "telemetry.csv"
EVIDENCE_FILE = "evidence.json"

#: Trace columns where NaN means "the source did not provide it"; t_s and gpu never are NaN.
TRACE_NAN_OK = ("power_w", "power_avg_w", "energy_j", "power_ts_s", "energy_ts_s")


def _fail(file: str, row: int | None, column: str | None, what: str) -> BadInputError:
    where = file
    if row is not None:
        where += f" row {row + 1}"
    if column is not None:
        where += ("," if row is not None else "") + f" column {column}"
    return BadInputError(f"{where}: {what}")


def first_true(mask: np.ndarray) -> int | None:
    """Index of the first True, or None."""
    if mask.size == 0:
        return None
    i = int(np.argmax(mask))
    return i if bool(mask[i]) else None


def _num(x: float) -> str:
    return repr(float(x))


def _check_finite(file: str, name: str, x: FloatArray, *, nan_ok: bool) -> None:
    i = first_true(np.isinf(x) if nan_ok else ~np.isfinite(x))
    if i is None:
        return
    if math.isnan(x[i]):
        raise _fail(file, i, name, "nan is not allowed in this column (only value columns)")
    raise _fail(file, i, name, f"{_num(x[i])} is not a finite number")


def _check_index(file: str, name: str, x: FloatArray) -> None:
    bad = ~np.isfinite(x) | (x < 0) | (x > MAX_GPU_INDEX) | (x != np.floor(x))
    i = first_true(bad)
    if i is not None:
        raise _fail(
            file, i, name, f"{_num(x[i])} is not a GPU index (an integer 0-{MAX_GPU_INDEX})"
        )


def _check_count(file: str, name: str, x: FloatArray, what: str) -> None:
    """A non-negative integer, or NaN."""
    i = first_true((x < 0) | (np.isfinite(x) & (x != np.floor(x))))
    if i is not None:
        raise _fail(file, i, name, f"{_num(x[i])} is not {what} (a non-negative integer or nan)")


def _check_range(file: str, name: str, x: FloatArray, lo: float, hi: float, unit: str) -> None:
    i = first_true(x < lo)
    if i is not None:
        what = "is negative" if lo == 0 else f"is below {lo:g} {unit}"
        raise _fail(file, i, name, f"{_num(x[i])} {unit} {what}")
    i = first_true(x > hi)
    if i is not None:
        raise _fail(file, i, name, f"{_num(x[i])} {unit} is above the bound of {hi:g} {unit}")


def _check_times(file: str, t: FloatArray, gpu: FloatArray, *, strict: bool) -> None:
    """Per GPU, in file order, each time after (or, not strict, at or after) the previous one."""
    if t.size < 2:
        return
    order = np.argsort(gpu, kind="stable")
    gs, ts = gpu[order], t[order]
    step_ok = ts[1:] > ts[:-1] if strict else ts[1:] >= ts[:-1]
    bad = np.flatnonzero((gs[1:] == gs[:-1]) & ~step_ok)
    if bad.size == 0:
        return
    later = order[1:][bad]
    k = int(np.argmin(later))
    row, prev = int(later[k]), int(order[bad[k]])
    word = "after" if strict else "at or after"
    raise _fail(
        file,
        row,
        "t_s",
        f"{_num(t[row])} s is not {word} GPU {int(gpu[row])}'s previous sample at row "
        f"{prev + 1} ({_num(t[prev])} s); times must {'strictly ' if strict else ''}increase "
        "per GPU",
    )


def _gpu_spans(t: FloatArray, gpu: FloatArray) -> dict[int, tuple[float, float]]:
    """Each GPU's first and last sample time (times already checked to increase)."""
    spans: dict[int, tuple[float, float]] = {}
    if t.size == 0:
        return spans
    order = np.argsort(gpu, kind="stable")
    gs = gpu[order]
    starts = np.flatnonzero(np.concatenate(([True], gs[1:] != gs[:-1])))
    ends = np.concatenate((starts[1:], [gs.size])) - 1
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        spans[int(gs[a])] = (float(t[order[a]]), float(t[order[b]]))
    return spans


def check_trace(cols: dict[str, FloatArray], file: str = TRACE_FILE) -> None:
    """Types, finiteness, physical bounds and strictly increasing time per GPU."""
    t, gpu = cols["t_s"], cols["gpu"]
    _check_finite(file, "t_s", t, nan_ok=False)
    _check_index(file, "gpu", gpu)
    for name in TRACE_NAN_OK:
        _check_finite(file, name, cols[name], nan_ok=True)
    for name in ("power_w", "power_avg_w"):
        _check_range(file, name, cols[name], 0.0, MAX_POWER_W, "W")
    _check_range(file, "energy_j", cols["energy_j"], 0.0, math.inf, "J")
    _check_times(file, t, gpu, strict=True)


def check_telemetry(cols: dict[str, FloatArray], file: str = TELEMETRY_FILE) -> None:
    """Finite times and indices, time non-decreasing per GPU, counts and percentages in range."""
    t, gpu = cols["t_s"], cols["gpu"]
    _check_finite(file, "t_s", t, nan_ok=False)
    _check_index(file, "gpu", gpu)
    for name, x in cols.items():
        if name not in ("t_s", "gpu"):
            _check_finite(file, name, x, nan_ok=True)
    _check_count(file, "process_count", cols["process_count"], "a process count")
    _check_count(file, "clocks_event_reasons", cols["clocks_event_reasons"], "a bitmask")
    _check_range(file, "gpu_util_pct", cols["gpu_util_pct"], 0.0, 100.0, "%")
    _check_times(file, t, gpu, strict=False)


def _where(path: str) -> str:
    return f"{EVIDENCE_FILE} {path}"


def _finite_fields(path: str, obj: object, names: Iterable[str]) -> None:
    for name in names:
        v = float(getattr(obj, name))
        if not math.isfinite(v):
            raise BadInputError(f"{_where(path)}, field {name}: {_num(v)} is not a finite number")


def _check_request(path: str, r: RequestRecord) -> None:
    _finite_fields(path, r, ("start_s", "first_token_s", "end_s"))
    if not r.start_s <= r.first_token_s:
        raise BadInputError(
            f"{_where(path)}, field first_token_s: {_num(r.first_token_s)} s is before the "
            f"request's start_s {_num(r.start_s)} s"
        )
    if not r.first_token_s <= r.end_s:
        raise BadInputError(
            f"{_where(path)}, field end_s: {_num(r.end_s)} s is before the request's "
            f"first_token_s {_num(r.first_token_s)} s"
        )
    for name in ("input_tokens", "output_tokens", "stream"):
        if getattr(r, name) < 0:
            raise BadInputError(f"{_where(path)}, field {name}: {getattr(r, name)} is negative")


def check_timeline(timeline: Timeline) -> None:
    """Requests inside their runs; runs ordered, non-empty and disjoint; baseline apart."""
    for i, r in enumerate(timeline.warmup):
        _check_request(f"timeline.warmup[{i}]", r)
    prev: RunRecord | None = None
    for k, run in enumerate(timeline.runs):
        _check_run(f"timeline.runs[{k}]", run, prev)
        prev = run
    if timeline.baseline is not None:
        _check_baseline(timeline.baseline, timeline.runs)


def _check_run(path: str, run: RunRecord, prev: RunRecord | None) -> None:
    """A run after its start, after the previous one, with its requests inside it."""
    _finite_fields(path, run, ("start_s", "end_s"))
    if not run.start_s < run.end_s:
        raise BadInputError(
            f"{_where(path)}, field end_s: {_num(run.end_s)} s is not after the run's "
            f"start_s {_num(run.start_s)} s"
        )
    if prev is not None and run.index <= prev.index:
        raise BadInputError(
            f"{_where(path)}, field index: {run.index} does not follow the previous "
            f"run's index {prev.index}; runs must be in order"
        )
    if prev is not None and run.start_s < prev.end_s:
        raise BadInputError(
            f"{_where(path)}, field start_s: {_num(run.start_s)} s is before the "
            f"previous run's end_s {_num(prev.end_s)} s; runs must be in order and "
            "not overlap"
        )
    for i, req in enumerate(run.requests):
        rp = f"{path}.requests[{i}]"
        _check_request(rp, req)
        if req.start_s < run.start_s:
            raise BadInputError(
                f"{_where(rp)}, field start_s: {_num(req.start_s)} s is before its run's "
                f"start_s {_num(run.start_s)} s"
            )
        if req.end_s > run.end_s:
            raise BadInputError(
                f"{_where(rp)}, field end_s: {_num(req.end_s)} s is after its run's end_s "
                f"{_num(run.end_s)} s"
            )


def _check_baseline(b: Interval, runs: list[RunRecord]) -> None:
    """The idle baseline after its start and apart from every run."""
    _finite_fields("timeline.baseline", b, ("start_s", "end_s"))
    if not b.start_s < b.end_s:
        raise BadInputError(
            f"{_where('timeline.baseline')}, field end_s: {_num(b.end_s)} s is not after "
            f"its start_s {_num(b.start_s)} s"
        )
    for k, run in enumerate(runs):
        if b.start_s < run.end_s and run.start_s < b.end_s:
            raise BadInputError(
                f"{_where('timeline.baseline')}: {_num(b.start_s)}-{_num(b.end_s)} s "
                f"overlaps timeline.runs[{k}] ({_num(run.start_s)}-{_num(run.end_s)} s)"
            )


def _check_gpu_set(file: str, gpu: FloatArray, allowed: set[int], *, all_needed: bool) -> None:
    listed = sorted(allowed)
    i = first_true(~np.isin(gpu, np.array(listed, dtype=np.float64)))
    if i is not None:
        raise _fail(
            file,
            i,
            "gpu",
            f"GPU {int(gpu[i])} is not in {EVIDENCE_FILE}'s environment.gpus {listed}",
        )
    if all_needed:
        seen = {int(g) for g in np.unique(gpu).tolist()}
        missing = [g for g in listed if g not in seen]
        if missing:
            raise _fail(
                file,
                None,
                "gpu",
                f"no samples of GPU {missing[0]}, which {EVIDENCE_FILE}'s environment.gpus "
                f"lists ({listed})",
            )


def check_consistency(
    meta: SessionMeta,
    timeline: Timeline,
    trace: dict[str, FloatArray],
    telemetry: dict[str, FloatArray],
) -> None:
    """Across files: distinct GPUs, the same everywhere, and a trace that covers every run
    and the idle baseline (an uncovered baseline would be extrapolated, not measured)."""
    indices = [g.index for g in meta.environment.gpus]
    uuids = [g.uuid for g in meta.environment.gpus]
    for what, values in (("index", indices), ("uuid", uuids)):
        dup = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if dup is not None:
            raise BadInputError(
                f"{EVIDENCE_FILE} meta.environment.gpus: GPU {what} {dup!r} appears twice"
            )
    env = set(indices)
    if env:
        _check_gpu_set(TRACE_FILE, trace["gpu"], env, all_needed=True)
        _check_gpu_set(TELEMETRY_FILE, telemetry["gpu"], env, all_needed=False)
    else:
        seen = {int(g) for g in np.unique(trace["gpu"]).tolist()}
        if seen:
            _check_gpu_set(TELEMETRY_FILE, telemetry["gpu"], seen, all_needed=False)
    spans = _gpu_spans(trace["t_s"], trace["gpu"])
    if timeline.runs and not spans:
        raise _fail(TRACE_FILE, None, None, "has no samples, so it covers no run")
    base = timeline.baseline
    for g, (first, last) in sorted(spans.items()):
        if base is not None and (first > base.start_s or last < base.end_s):
            raise _fail(
                TRACE_FILE,
                None,
                "t_s",
                f"GPU {g}'s samples span {_num(first)}-{_num(last)} s and do not cover "
                f"{EVIDENCE_FILE} timeline.baseline ({_num(base.start_s)}-{_num(base.end_s)} s)",
            )
    for k, run in enumerate(timeline.runs):
        for g, (first, last) in sorted(spans.items()):
            if first > run.start_s or last < run.end_s:
                raise _fail(
                    TRACE_FILE,
                    None,
                    "t_s",
                    f"GPU {g}'s samples span {_num(first)}-{_num(last)} s and do not cover "
                    f"{EVIDENCE_FILE} timeline.runs[{k}] ({_num(run.start_s)}-"
                    f"{_num(run.end_s)} s)",
                )
