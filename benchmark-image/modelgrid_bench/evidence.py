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
bits and `analyze` reproduces the original result exactly. Rows end in CRLF (the csv module's
default, kept so the bytes, and so the digests, of a session's files do not depend on the
version that wrote them); the reader accepts LF too.

Reading checks every file's size before reading it (`SIZE_LIMITS`), parses the CSVs vectorised
(numpy's C parser, with the cell count of every line checked first) and validates the result
(`modelgrid_bench.validate`); any violation is a `BadInputError` of one line naming the file,
row and column. The sha256 of the CSV bytes as read (or written) goes into `Evidence.digests`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from modelgrid_bench import validate
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
from modelgrid_contract.result import BenchmarkResult, EvidenceDigests
from modelgrid_contract.wire import encode_compact

log = logging.getLogger(__name__)

EVIDENCE_FORMAT = "modelgrid.evidence/v1"
TRACE_CACHE_FILE = "trace.npz"
TRACE_CACHE_FORMAT = "modelgrid.trace-cache/v1"
#: Rows of trace.csv compared with the cache before it is used: the first, the last, and random.
CACHE_CHECK_ENDS = 64
CACHE_CHECK_RANDOM = 4096

_MIB = 1 << 20
#: Largest file `read_evidence` accepts, bytes, checked before reading. A 10 ms trace of 8 GPUs
#: is about 60 MB an hour, so these leave room for hours of sampling and refuse a runaway file.
SIZE_LIMITS: dict[str, int] = {
    validate.TRACE_FILE: 256 * _MIB,
    validate.TELEMETRY_FILE: 64 * _MIB,
    validate.EVIDENCE_FILE: 16 * _MIB,
    TRACE_CACHE_FILE: 512 * _MIB,
}

_EOL = "\r\n"


# --------------------------------------------------------------------------- writing


def _column_text(x: np.ndarray, *, integer: bool) -> list[str]:
    if integer:
        return list(map(str, np.asarray(x, dtype=np.int64).tolist()))
    x = np.asarray(x, dtype=np.float64)
    if x.size and bool(np.all(np.isnan(x))):
        return ["nan"] * x.size  # repr of every NaN
    return list(map(repr, x.tolist()))


def encode_csv(columns: tuple[str, ...], values: list[np.ndarray], integer: set[str]) -> bytes:
    """CSV bytes: a header, then one row per sample, floats as repr() (bit-exact round trip)."""
    head = ",".join(columns) + _EOL
    n = values[0].size if values else 0
    if n == 0:
        return head.encode("ascii")
    cells = [_column_text(v, integer=c in integer) for c, v in zip(columns, values, strict=True)]
    return (head + _EOL.join(map(",".join, zip(*cells, strict=True))) + _EOL).encode("ascii")


def encode_trace(tr: Trace) -> bytes:
    return encode_csv(TRACE_COLUMNS, [getattr(tr, c) for c in TRACE_COLUMNS], {"gpu"})


def encode_telemetry(tel: Telemetry) -> bytes:
    n = tel.size
    cols = [tel.get(c) if c in tel.columns else np.full(n, np.nan) for c in TELEMETRY_COLUMNS]
    return encode_csv(TELEMETRY_COLUMNS, cols, set())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_trace_cache(directory: Path, tr: Trace, csv_sha256: str) -> str:
    """trace.npz: the trace's columns as trace.csv reads back (NaNs canonical), tied to its sha256.

    Only a cache for `read_evidence` (parsing a long CSV costs about a second per million rows);
    trace.csv stays the evidence. Written to a temporary name and renamed, so it is whole or absent.
    """
    members: dict[str, Any] = {
        "format": np.array(TRACE_CACHE_FORMAT),
        "trace_sha256": np.array(csv_sha256),
    }
    for c in TRACE_COLUMNS:
        x = getattr(tr, c)
        if c == "gpu":
            members[c] = np.asarray(x, dtype=np.int64)
        else:
            x = np.asarray(x, dtype=np.float64)
            members[c] = np.where(np.isnan(x), np.nan, x)
    tmp = directory / (TRACE_CACHE_FILE + ".tmp")
    with tmp.open("wb") as fh:
        np.savez(fh, **members)
    digest = _sha256(tmp.read_bytes())
    os.replace(tmp, directory / TRACE_CACHE_FILE)
    return digest


def write_evidence(directory: Path, ev: Evidence) -> EvidenceDigests:
    """Write trace.csv, its columnar copy trace.npz, telemetry.csv and evidence.json; returns
    the sha256 of the files as written."""
    directory.mkdir(parents=True, exist_ok=True)
    trace = encode_trace(ev.trace)
    (directory / validate.TRACE_FILE).write_bytes(trace)
    columns = _write_trace_cache(directory, ev.trace, _sha256(trace))
    telemetry = encode_telemetry(ev.telemetry)
    (directory / validate.TELEMETRY_FILE).write_bytes(telemetry)
    doc = {
        "format": EVIDENCE_FORMAT,
        "meta": ev.meta.model_dump(mode="json"),
        "timeline": ev.timeline.model_dump(mode="json"),
    }
    (directory / validate.EVIDENCE_FILE).write_text(json.dumps(doc, indent=1) + "\n")
    # The live result names the columnar copy too: `analyze DIR` reads through it and so
    # reproduces the live result bit for bit; a copy changed since no longer matches.
    return EvidenceDigests(
        trace_sha256=_sha256(trace), telemetry_sha256=_sha256(telemetry), columns_sha256=columns
    )


def write_result(directory: Path, result: BenchmarkResult) -> str:
    """Write the full and compact results; returns the compact text."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "result.json").write_text(result.model_dump_json(indent=1, by_alias=True) + "\n")
    compact = encode_compact(result)
    (directory / "result-compact.json").write_text(compact + "\n")
    return compact


# --------------------------------------------------------------------------- reading


def _read_limited(directory: Path, name: str) -> bytes:
    path = directory / name
    limit = SIZE_LIMITS[name]
    try:
        if not path.is_file():
            raise BadInputError(f"{name} is missing from the evidence directory {directory}")
        size = path.stat().st_size
        if size > limit:
            raise BadInputError(
                f"{name} is {size} bytes, over the limit of {limit} bytes ({limit / _MIB:g} MiB)"
            )
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise BadInputError(f"{name} cannot be read: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise BadInputError(f"{name} grew past the limit of {limit} bytes while being read")
    return data


def _line_of(data: bytes, pos: int) -> int:
    return data.count(b"\n", 0, pos) + 1


def _at_byte(name: str, data: bytes, pos: int, columns: tuple[str, ...]) -> str:
    """`NAME row R, column C` (or `NAME line 1` in the header) of the byte at `pos`."""
    line = _line_of(data, pos)
    if line == 1:
        return f"{name} line 1"
    col = data.count(b",", data.rfind(b"\n", 0, pos) + 1, pos)
    return f"{name} row {line - 1}, column {columns[col] if col < len(columns) else col + 1}"


def _check_text(name: str, data: bytes, columns: tuple[str, ...]) -> None:
    """The CSVs are ASCII; name the cell of the first byte that is not valid UTF-8 or not ASCII."""
    if data.isascii():
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{_at_byte(name, data, exc.start, columns)}: byte {exc.start} is not valid UTF-8"
        ) from exc
    pos = int(np.argmax(np.frombuffer(data, dtype=np.uint8) >= 0x80))
    raise BadInputError(
        f"{_at_byte(name, data, pos, columns)}: a non-ASCII character at byte {pos} (cells are "
        "numbers)"
    )


def _cell_ok(cell: bytes) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return np.fromstring(cell, dtype=np.float64, sep=",").size == 1
        except (ValueError, DeprecationWarning):
            return False


def _parse_values(body: bytes, count: int) -> np.ndarray | int:
    """All cells (lines already checked), or the index of a cell that may not parse."""
    flat = body.replace(b"\n", b",")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            v = np.fromstring(flat, dtype=np.float64, sep=",")
        except ValueError:
            return 0
    return v if v.size == count else int(v.size)


def _body(name: str, data: bytes, columns: tuple[str, ...]) -> bytes:
    """The rows after a header that is exactly `columns` (CRLF read as LF; a stray CR named)."""
    if not data:
        raise BadInputError(f"{name} is empty (no header line)")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
        if b"\r" in data:
            pos = data.index(b"\r")
            raise BadInputError(f"{_at_byte(name, data, pos, columns)}: a stray carriage return")
    end = data.find(b"\n")
    header = (data if end < 0 else data[:end]).decode("ascii")
    if header.split(",") != list(columns):
        raise BadInputError(
            f"{name} line 1: the header is {header[:200]!r}, not {','.join(columns)!r}"
        )
    return data[end + 1 :] if end >= 0 else b""


def _check_cut_off(
    name: str, body: bytes, seps: np.ndarray, ends: np.ndarray, columns: tuple[str, ...]
) -> None:
    """The last row must end with a line end (a file cut mid-row is named, row and cell)."""
    if body.endswith(b"\n"):
        return
    rows = ends.size
    done = seps.size - (int(ends[-1]) + 1 if rows else 0)  # the cut row's complete cells
    where = columns[done] if done < len(columns) else f"{done + 1}"
    raise BadInputError(
        f"{name} row {rows + 1}, column {where}: the row is cut off (the file ends mid-row, "
        "without a line end)"
    )


def _check_cells(
    name: str, seps: np.ndarray, ends: np.ndarray, starts: np.ndarray, columns: tuple[str, ...]
) -> None:
    """Every row has exactly one cell per column, none empty; the first fault is named."""
    k = len(columns)
    per_line = np.diff(ends, prepend=-1)  # cells per line
    bad = validate.first_true(per_line != k)
    empty = validate.first_true(seps == starts)
    empty_row = int(np.searchsorted(ends, empty)) if empty is not None else None
    if bad is not None and (empty_row is None or bad <= empty_row):
        n = int(per_line[bad])
        if n == 1 and empty_row == bad:
            raise BadInputError(f"{name} row {bad + 1}: the line is blank ({k} cells expected)")
        if n > k:
            raise BadInputError(
                f"{name} row {bad + 1}, column {k + 1}: an extra cell ({n} cells, not {k})"
            )
        raise BadInputError(
            f"{name} row {bad + 1}, column {columns[n]}: missing ({n} cells, not {k})"
        )
    if empty is not None and empty_row is not None:
        first = int(ends[empty_row - 1]) + 1 if empty_row else 0
        raise BadInputError(
            f"{name} row {empty_row + 1}, column {columns[empty - first]}: the cell is empty"
        )


def _not_a_number(
    name: str,
    body: bytes,
    stopped: int,
    seps: np.ndarray,
    starts: np.ndarray,
    columns: tuple[str, ...],
) -> BadInputError:
    """Name the first cell numpy's parser stopped at (it may have consumed a numeric prefix of
    that cell, so the cell is the last one counted or the next)."""
    k = len(columns)
    near = [c for c in (stopped - 1, stopped) if 0 <= c < seps.size]
    for c in itertools.chain(near, range(seps.size)):
        cell = body[int(starts[c]) : int(seps[c])]
        if not _cell_ok(cell):
            row, col = divmod(c, k)
            text = cell[:40].decode("ascii", "replace")
            return BadInputError(
                f"{name} row {row + 1}, column {columns[col]}: {text!r} is not a number"
            )
    return BadInputError(f"{name}: the cells could not be parsed as numbers")


def parse_csv(name: str, data: bytes, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Columns of a CSV of numbers with exactly `columns`; BadInputError names line and cell."""
    _check_text(name, data, columns)
    body = _body(name, data, columns)
    k = len(columns)
    if not body:
        return {c: np.zeros(0) for c in columns}
    u = np.frombuffer(body, dtype=np.uint8)
    seps = np.flatnonzero((u == 0x2C) | (u == 0x0A))  # every comma and line end
    ends = np.flatnonzero(u[seps] == 0x0A)  # indices into seps of the line ends
    _check_cut_off(name, body, seps, ends, columns)
    starts = np.concatenate(([0], seps[:-1] + 1))
    _check_cells(name, seps, ends, starts, columns)
    parsed = _parse_values(body, ends.size * k)
    if isinstance(parsed, int):
        raise _not_a_number(name, body, parsed, seps, starts, columns)
    table = np.ascontiguousarray(parsed.reshape(ends.size, k).T)
    return {c: table[i] for i, c in enumerate(columns)}


def _read_doc(directory: Path) -> tuple[SessionMeta, Timeline]:
    name = validate.EVIDENCE_FILE
    if not (directory / name).is_file():
        raise BadInputError(f"{directory} is not an evidence directory (no {name})")
    raw = _read_limited(directory, name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{name} line {_line_of(raw, exc.start)}: byte {exc.start} is not valid UTF-8"
        ) from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"{name} line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise BadInputError(f"{name}: not valid JSON: nested too deeply") from exc
    if not isinstance(doc, dict):
        raise BadInputError(f"{name}: the document is a JSON {type(doc).__name__}, not an object")
    if doc.get("format") != EVIDENCE_FORMAT:
        raise BadInputError(
            f"{name} field format: {str(doc.get('format'))[:80]!r} is not {EVIDENCE_FORMAT!r}"
        )
    for key in ("meta", "timeline"):
        if key not in doc:
            raise BadInputError(f"{name}: the field {key!r} is missing")
    try:
        meta = SessionMeta.model_validate(doc["meta"])
        timeline = Timeline.model_validate(doc["timeline"])
    except ValidationError as exc:
        errs = exc.errors()
        first = errs[0]
        root = "meta" if exc.title == SessionMeta.__name__ else "timeline"
        loc = ".".join([root, *(str(x) for x in first["loc"])])
        more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
        msg = " ".join(str(first["msg"]).split())
        raise BadInputError(f"{name} field {loc}: {msg}{more}") from exc
    return meta, timeline


def _load_trace_cache(directory: Path, csv_sha256: str) -> dict[str, np.ndarray] | None:
    """trace.npz's columns if it is whole, within its limit and recorded for these CSV bytes."""
    path = directory / TRACE_CACHE_FILE
    try:
        if not path.is_file() or path.stat().st_size > SIZE_LIMITS[TRACE_CACHE_FILE]:
            return None
        with zipfile.ZipFile(path) as zf:
            # Stored members only, none larger than the file: no decompression bomb.
            if any(
                i.compress_type != zipfile.ZIP_STORED or i.file_size > SIZE_LIMITS[TRACE_CACHE_FILE]
                for i in zf.infolist()
            ):
                return None
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != TRACE_CACHE_FORMAT or str(z["trace_sha256"]) != csv_sha256:
                return None
            cols = {c: z[c] for c in TRACE_COLUMNS}
    except Exception:  # a cache that cannot be read is not used; the CSV is the evidence
        return None
    n = cols["t_s"].shape
    for c, x in cols.items():
        want = np.int64 if c == "gpu" else np.float64
        if x.ndim != 1 or x.shape != n or x.dtype != want:
            return None
    cols["gpu"] = cols["gpu"].astype(np.float64)
    return cols


def _cache_agrees(data: bytes, cols: dict[str, np.ndarray], csv_sha256: str) -> bool:
    """The cache has trace.csv's row count, and its first, last and sampled rows parse to it.

    The sample is drawn from the CSV's own digest, so the same files always give the same
    answer (and `analyze` the same result); a result read through the cache names the cache's
    digest too, and `analyze --no-cache` re-derives it from the CSV alone.
    """
    body_start = data.find(b"\n") + 1
    if body_start == 0 or not data.endswith(b"\n"):
        return False
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8)[body_start:] == 0x0A) + body_start
    n = int(cols["t_s"].size)
    if ends.size != n:
        return False
    if n == 0:
        return True
    rng = np.random.default_rng(int(csv_sha256[:16], 16))
    rows = np.unique(
        np.concatenate(
            (
                np.arange(min(n, CACHE_CHECK_ENDS)),
                np.arange(max(0, n - CACHE_CHECK_ENDS), n),
                rng.integers(0, n, CACHE_CHECK_RANDOM),
            )
        )
    )
    starts = np.concatenate(([body_start], ends[:-1] + 1))
    lines = b"".join(data[int(starts[r]) : int(ends[r]) + 1] for r in rows.tolist())
    try:
        sample = parse_csv("trace.csv", data[:body_start] + lines, TRACE_COLUMNS)
    except BadInputError:
        return False
    return all(
        np.array_equal(sample[c], cols[c][rows], equal_nan=True)
        and np.array_equal(np.signbit(sample[c]), np.signbit(cols[c][rows]))
        for c in TRACE_COLUMNS
    )


def _trace_columns(
    directory: Path, data: bytes, csv_sha256: str, *, use_cache: bool
) -> tuple[dict[str, np.ndarray], str | None]:
    """The trace's columns and, when they came from trace.npz, that file's sha256."""
    cached = _load_trace_cache(directory, csv_sha256) if use_cache else None
    if cached is not None:
        if _cache_agrees(data, cached, csv_sha256):
            return cached, _sha256((directory / TRACE_CACHE_FILE).read_bytes())
        log.warning("%s disagrees with %s; parsing the CSV", TRACE_CACHE_FILE, validate.TRACE_FILE)
    return parse_csv(validate.TRACE_FILE, data, TRACE_COLUMNS), None


def read_evidence(directory: Path, *, use_cache: bool = True) -> Evidence:
    """Read and validate an evidence directory (see `modelgrid_bench.validate`); with
    `use_cache=False` the trace comes from trace.csv alone, never from trace.npz."""
    meta, timeline = _read_doc(directory)
    validate.check_timeline(timeline)
    trace_bytes = _read_limited(directory, validate.TRACE_FILE)
    trace_sha256 = _sha256(trace_bytes)
    t, columns_sha256 = _trace_columns(directory, trace_bytes, trace_sha256, use_cache=use_cache)
    validate.check_trace(t)
    tel_bytes = _read_limited(directory, validate.TELEMETRY_FILE)
    tel = parse_csv(validate.TELEMETRY_FILE, tel_bytes, TELEMETRY_COLUMNS)
    validate.check_telemetry(tel)
    validate.check_consistency(meta, timeline, t, tel)
    trace = Trace(
        t_s=t["t_s"],
        gpu=t["gpu"].astype(np.int64),
        power_w=t["power_w"],
        power_avg_w=t["power_avg_w"],
        energy_j=t["energy_j"],
        power_ts_s=t["power_ts_s"],
        energy_ts_s=t["energy_ts_s"],
    )
    digests = EvidenceDigests(
        trace_sha256=trace_sha256,
        telemetry_sha256=_sha256(tel_bytes),
        columns_sha256=columns_sha256,
    )
    return Evidence(
        meta=meta, timeline=timeline, trace=trace, telemetry=Telemetry(tel), digests=digests
    )
