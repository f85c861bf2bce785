"""Writes and reads a session's evidence directory. Does file I/O.

Layout of an output directory:

* `trace.csv`: fast samples, columns `t_s,gpu,power_w,power_avg_w,energy_j,power_ts_s,energy_ts_s`
  (seconds on the sampler's monotonic clock; GPU index; instant power W; NVML one-second average
  power W; energy counter J since driver load; NVML's timestamps of the power and energy values
  mapped to the sampler clock, s; `nan` where a value is unavailable);
* `telemetry.csv`: slow samples (clocks MHz, temperature C, clocks-event reasons bitmask,
  cumulative power/thermal violation ns, power limit W, utilisation %, compute process count);
* `evidence.json`: the session metadata and the request timeline;
* `result.json` (full result) and `result-compact.json` (the termination message).

Floats are written with Python's shortest round-trip repr, so reading them back yields the same
bits and `analyze` reproduces the original result exactly.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from modelgrid_bench.errors import BadInputError
from modelgrid_bench.records import (
    TELEMETRY_COLUMNS,
    TRACE_COLUMNS,
    Evidence,
    SessionMeta,
    Telemetry,
    Timeline,
    Trace,
)
from modelgrid_contract.result import BenchmarkResult
from modelgrid_contract.wire import encode_compact

EVIDENCE_FORMAT = "modelgrid.evidence/v1"


def _fmt(x: float) -> str:
    return repr(float(x))


def write_evidence(directory: Path, ev: Evidence) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tr = ev.trace
    with (directory / "trace.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(TRACE_COLUMNS)
        for i in range(tr.t_s.size):
            w.writerow(
                [
                    _fmt(tr.t_s[i]),
                    int(tr.gpu[i]),
                    _fmt(tr.power_w[i]),
                    _fmt(tr.power_avg_w[i]),
                    _fmt(tr.energy_j[i]),
                    _fmt(tr.power_ts_s[i]),
                    _fmt(tr.energy_ts_s[i]),
                ]
            )
    with (directory / "telemetry.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(TELEMETRY_COLUMNS)
        cols = [ev.telemetry.get(c) for c in TELEMETRY_COLUMNS]
        for i in range(ev.telemetry.size):
            w.writerow([_fmt(c[i]) for c in cols])
    doc = {
        "format": EVIDENCE_FORMAT,
        "meta": ev.meta.model_dump(mode="json"),
        "timeline": ev.timeline.model_dump(mode="json"),
    }
    (directory / "evidence.json").write_text(json.dumps(doc, indent=1) + "\n")


def write_result(directory: Path, result: BenchmarkResult) -> str:
    """Write the full and compact results; returns the compact text."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "result.json").write_text(result.model_dump_json(indent=1, by_alias=True) + "\n")
    compact = encode_compact(result)
    (directory / "result-compact.json").write_text(compact + "\n")
    return compact


def _read_csv(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise BadInputError(f"evidence file {path} is missing")
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(header[: len(columns)]) != columns:
            raise BadInputError(f"{path} does not have the columns {','.join(columns)}")
        rows = [[float(v) for v in row] for row in reader if row]
    data = np.array(rows, dtype=np.float64).reshape(-1, len(header))
    return {name: data[:, i].copy() for i, name in enumerate(columns)}


def read_evidence(directory: Path) -> Evidence:
    doc_path = directory / "evidence.json"
    if not doc_path.is_file():
        raise BadInputError(f"{directory} is not an evidence directory (no evidence.json)")
    try:
        doc = json.loads(doc_path.read_text())
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{doc_path} is not valid JSON: {exc}") from exc
    if doc.get("format") != EVIDENCE_FORMAT:
        raise BadInputError(f"{doc_path} has format {doc.get('format')!r}, not {EVIDENCE_FORMAT}")
    try:
        meta = SessionMeta.model_validate(doc["meta"])
        timeline = Timeline.model_validate(doc["timeline"])
    except (KeyError, ValueError) as exc:
        raise BadInputError(f"{doc_path} is not valid evidence: {exc}") from exc
    t = _read_csv(directory / "trace.csv", TRACE_COLUMNS)
    trace = Trace(
        t_s=t["t_s"],
        gpu=t["gpu"].astype(np.int64),
        power_w=t["power_w"],
        power_avg_w=t["power_avg_w"],
        energy_j=t["energy_j"],
        power_ts_s=t["power_ts_s"],
        energy_ts_s=t["energy_ts_s"],
    )
    telemetry = Telemetry(_read_csv(directory / "telemetry.csv", TELEMETRY_COLUMNS))
    return Evidence(meta=meta, timeline=timeline, trace=trace, telemetry=telemetry)
