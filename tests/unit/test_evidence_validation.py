"""Bad evidence is refused in one line (exit 2); good evidence reads back bit for bit, fast."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelgrid_bench import cli
from modelgrid_bench import evidence as evidence_io
from modelgrid_bench.analysis import analyze
from modelgrid_contract.reasons import ExitCode
from tests import factory as f

Corrupt = Callable[[Path], None]


@pytest.fixture(autouse=True)
def _no_termination_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELGRID_TERMINATION_LOG", raising=False)


def analyze_cli(directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELGRID_")}
    return subprocess.run(
        [sys.executable, "-m", "modelgrid_bench", "analyze", str(directory), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def analyze_main(directory: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli.main(["analyze", str(directory), "--log-level", "ERROR"])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_refusal(rc: int, out: str, err: str, *needles: str) -> str:
    assert rc == ExitCode.BAD_INPUT, err
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- corruptions


def _trace(d: Path) -> Path:
    return d / "trace.csv"


def cut_mid_row(d: Path) -> None:
    data = _trace(d).read_bytes()
    _trace(d).write_bytes(data[: len(data) - 12])  # inside the last row's energy_ts_s..energy_j


def empty_cell(d: Path) -> None:
    f.set_csv_cell(_trace(d), 17, "power_w", "")


def non_numeric_cell(d: Path) -> None:
    f.set_csv_cell(_trace(d), 17, "power_w", "12x")


def extra_cell(d: Path) -> None:
    f.edit_csv(_trace(d), lambda rows: [[*r, "1.0"] if i == 16 else r for i, r in enumerate(rows)])


def missing_cell(d: Path) -> None:
    f.edit_csv(_trace(d), lambda rows: [r[:-1] if i == 16 else r for i, r in enumerate(rows)])


def invalid_utf8(d: Path) -> None:
    lines = _trace(d).read_bytes().split(b"\r\n")
    cells = lines[17].split(b",")  # line 18 is data row 17
    cells[2] = b"\xff\xfe" + cells[2]  # its power_w cell
    lines[17] = b",".join(cells)
    _trace(d).write_bytes(b"\r\n".join(lines))


def reversed_rows(d: Path) -> None:
    f.edit_csv(_trace(d), lambda rows: rows[::-1])


def duplicate_timestamp(d: Path) -> None:
    def edit(rows: list[list[str]]) -> None:
        rows[17][0] = rows[16][0]

    f.edit_csv(_trace(d), edit)


def negative_power(d: Path) -> None:
    f.set_csv_cell(_trace(d), 17, "power_w", "-500.0")


def too_much_power(d: Path) -> None:
    f.set_csv_cell(_trace(d), 17, "power_avg_w", "7000.0")


def infinite_energy(d: Path) -> None:
    f.set_csv_cell(_trace(d), 17, "energy_j", "inf")


def nan_time(d: Path) -> None:
    f.set_csv_cell(_trace(d), 17, "t_s", "nan")


def fractional_gpu(d: Path) -> None:
    f.set_csv_cell(_trace(d), 17, "gpu", "0.5")


def gpu_not_in_environment(d: Path) -> None:
    f.set_csv_cell(_trace(d), 17, "gpu", "3")


def gpu_missing_from_trace(d: Path) -> None:
    def edit(doc: dict[str, Any]) -> None:
        gpus = doc["meta"]["environment"]["gpus"]
        gpus.append({**gpus[0], "index": 1, "uuid": "GPU-1"})

    f.edit_evidence_json(d, edit)


def telemetry_util_over_100(d: Path) -> None:
    f.set_csv_cell(d / "telemetry.csv", 3, "gpu_util_pct", "150.0")


def telemetry_fractional_processes(d: Path) -> None:
    f.set_csv_cell(d / "telemetry.csv", 3, "process_count", "1.5")


def telemetry_time_goes_back(d: Path) -> None:
    f.set_csv_cell(d / "telemetry.csv", 3, "t_s", "-1.0")


def _run(k: int, edit: Callable[[dict[str, Any]], None]) -> Corrupt:
    return lambda d: f.edit_evidence_json(d, lambda doc: edit(doc["timeline"]["runs"][k]))


def _set(**values: float) -> Callable[[dict[str, Any]], None]:
    return lambda obj: obj.update(values)


def run_ends_before_start(d: Path) -> None:
    def edit(run: dict[str, Any]) -> None:
        run["end_s"] = run["start_s"] - 1.0
        run["requests"] = []

    _run(1, edit)(d)


def overlapping_runs(d: Path) -> None:
    _run(1, _set(start_s=2.5))(d)


def first_token_before_start(d: Path) -> None:
    def edit(run: dict[str, Any]) -> None:
        req = run["requests"][2]
        req["first_token_s"] = req["start_s"] - 0.01

    _run(0, edit)(d)


def request_outside_its_run(d: Path) -> None:
    def edit(run: dict[str, Any]) -> None:
        run["requests"][0]["start_s"] = run["start_s"] - 0.5

    _run(0, edit)(d)


def request_after_its_run(d: Path) -> None:
    def edit(run: dict[str, Any]) -> None:
        run["requests"][-1]["end_s"] = run["end_s"] + 0.5

    _run(0, edit)(d)


def negative_tokens(d: Path) -> None:
    _run(0, lambda run: run["requests"][1].update(output_tokens=-3))(d)


def baseline_overlaps_a_run(d: Path) -> None:
    f.edit_evidence_json(d, lambda doc: doc["timeline"]["baseline"].update(end_s=1.5))


def trace_not_covering_a_run(d: Path) -> None:
    f.edit_csv(_trace(d), lambda rows: [r for r in rows if float(r[0]) < 5.0])


def missing_telemetry(d: Path) -> None:
    (d / "telemetry.csv").unlink()


def json_cut(d: Path) -> None:
    text = (d / "evidence.json").read_text()
    (d / "evidence.json").write_text(text[: len(text) // 2])


def json_schema_violation(d: Path) -> None:
    f.edit_evidence_json(d, lambda doc: doc["meta"]["workload"].update(samples="many"))


def json_not_an_object(d: Path) -> None:
    (d / "evidence.json").write_text("[1, 2]\n")


CASES: list[tuple[Corrupt, tuple[str, ...]]] = [
    (cut_mid_row, ("trace.csv row ", "column energy_j", "cut off")),
    (empty_cell, ("trace.csv row 17, column power_w", "empty")),
    (non_numeric_cell, ("trace.csv row 17, column power_w", "'12x' is not a number")),
    (extra_cell, ("trace.csv row 17, column 8", "extra cell")),
    (missing_cell, ("trace.csv row 17, column energy_ts_s", "missing")),
    (invalid_utf8, ("trace.csv row 17, column power_w", "not valid UTF-8")),
    (reversed_rows, ("trace.csv row 2, column t_s", "strictly increase")),
    (duplicate_timestamp, ("trace.csv row 18, column t_s", "previous sample at row 17")),
    (negative_power, ("trace.csv row 17, column power_w: -500.0 W is negative",)),
    (too_much_power, ("trace.csv row 17, column power_avg_w", "7000.0 W is above")),
    (infinite_energy, ("trace.csv row 17, column energy_j", "inf is not a finite number")),
    (nan_time, ("trace.csv row 17, column t_s", "nan is not allowed")),
    (fractional_gpu, ("trace.csv row 17, column gpu", "0.5 is not a GPU index")),
    (gpu_not_in_environment, ("trace.csv row 17, column gpu", "GPU 3 is not in evidence.json")),
    (gpu_missing_from_trace, ("trace.csv column gpu", "no samples of GPU 1")),
    (telemetry_util_over_100, ("telemetry.csv row 3, column gpu_util_pct", "150.0 %")),
    (telemetry_fractional_processes, ("telemetry.csv row 3, column process_count", "1.5")),
    (telemetry_time_goes_back, ("telemetry.csv row 3, column t_s", "-1.0 s")),
    (run_ends_before_start, ("evidence.json timeline.runs[1], field end_s", "not after")),
    (overlapping_runs, ("evidence.json timeline.runs[1], field start_s", "not overlap")),
    (
        first_token_before_start,
        ("evidence.json timeline.runs[0].requests[2], field first_token_s", "before"),
    ),
    (
        request_outside_its_run,
        ("evidence.json timeline.runs[0].requests[0], field start_s", "before its run"),
    ),
    (
        request_after_its_run,
        ("evidence.json timeline.runs[0].requests[9], field end_s", "after its run"),
    ),
    (negative_tokens, ("timeline.runs[0].requests[1], field output_tokens: -3 is negative",)),
    (baseline_overlaps_a_run, ("evidence.json timeline.baseline", "overlaps timeline.runs[0]")),
    (trace_not_covering_a_run, ("trace.csv column t_s", "do not cover", "timeline.runs[1]")),
    (missing_telemetry, ("telemetry.csv is missing",)),
    (json_cut, ("evidence.json line ", "not valid JSON")),
    (json_schema_violation, ("evidence.json field meta.workload.samples",)),
    (json_not_an_object, ("evidence.json", "not an object")),
]


@pytest.fixture
def good_dir(tmp_path: Path) -> Path:
    return f.evidence_dir(tmp_path / "ev")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("corrupt", "needles"), CASES, ids=[c.__name__ for c, _ in CASES])
def test_bad_evidence_is_refused_in_one_line(
    good_dir: Path,
    corrupt: Corrupt,
    needles: tuple[str, ...],
    capsys: pytest.CaptureFixture[str],
) -> None:
    corrupt(good_dir)  # trace.npz stays: a stale cache must not hide the damage
    assert_one_line_refusal(*analyze_main(good_dir, capsys), *needles)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("corrupt", "needles"),
    [c for c in CASES if c[0] in (cut_mid_row, invalid_utf8, reversed_rows, json_cut)],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_the_real_cli_refuses_without_a_traceback(
    good_dir: Path, corrupt: Corrupt, needles: tuple[str, ...]
) -> None:
    corrupt(good_dir)
    proc = analyze_cli(good_dir)
    assert_one_line_refusal(proc.returncode, proc.stdout, proc.stderr, *needles)


@pytest.mark.timeout(60)
def test_an_oversized_file_is_refused_before_it_is_read(
    good_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(evidence_io.SIZE_LIMITS, "trace.csv", 1000)
    size = (good_dir / "trace.csv").stat().st_size
    assert_one_line_refusal(
        *analyze_main(good_dir, capsys), f"trace.csv is {size} bytes, over the limit of 1000"
    )


@pytest.mark.timeout(60)
def test_a_missing_trace_and_a_non_evidence_directory_are_refused(
    good_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (good_dir / "trace.csv").unlink()
    assert_one_line_refusal(*analyze_main(good_dir, capsys), "trace.csv is missing")
    assert_one_line_refusal(
        *analyze_main(tmp_path / "nowhere", capsys), "not an evidence directory (no evidence.json)"
    )


# --------------------------------------------------------------------------- good evidence


def _full(directory: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = cli.main(["analyze", str(directory), "--full", "--log-level", "ERROR"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out


@pytest.mark.timeout(60)
def test_valid_evidence_analyzes_to_the_same_result_bit_for_bit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ev = f.known_evidence(gpus=2)
    d = f.evidence_dir(tmp_path / "ev", ev)
    want = analyze(ev)
    rc, out = _full(d, capsys)
    assert out == want.model_dump_json(indent=1, by_alias=True) + "\n"
    assert rc in (ExitCode.OK, ExitCode.REFUSED)
    back = evidence_io.read_evidence(d)
    for name in ("t_s", "gpu", "power_w", "power_avg_w", "energy_j", "power_ts_s", "energy_ts_s"):
        a, b = getattr(ev.trace, name), getattr(back.trace, name)
        assert a.tobytes() == b.tobytes() or np.array_equal(a, b, equal_nan=True), name
    # Without the columnar cache, from the CSV alone: the same, but for the provenance field
    # that names the cache.
    (d / "trace.npz").unlink()
    rc2, out2 = _full(d, capsys)
    assert rc2 == rc
    a, b = json.loads(out2), json.loads(out)
    assert b["evidence"].pop("columns_sha256")
    assert a["evidence"].pop("columns_sha256") is None
    assert a == b


@pytest.mark.timeout(60)
def test_the_writer_writes_repr_floats_and_crlf_rows(tmp_path: Path) -> None:
    ev = f.known_evidence()
    ev.trace.power_w[:4] = [np.nan, -0.0, 1e-300, 0.1 + 0.2]
    d = f.evidence_dir(tmp_path / "ev", ev)
    lines = (d / "trace.csv").read_bytes().split(b"\r\n")
    assert lines[0] == b"t_s,gpu,power_w,power_avg_w,energy_j,power_ts_s,energy_ts_s"
    assert [ln.split(b",")[2] for ln in lines[1:5]] == [
        b"nan",
        b"-0.0",
        b"1e-300",
        b"0.30000000000000004",
    ]
    assert lines[-1] == b""
    back = evidence_io.read_evidence(d).trace.power_w[:4]
    assert np.isnan(back[0])
    assert np.signbit(back[1])
    assert back[2] == 1e-300
    assert back[3] == 0.1 + 0.2


@pytest.mark.timeout(60)
def test_a_nan_power_reading_is_accepted(
    good_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f.set_csv_cell(good_dir / "trace.csv", 17, "power_w", "nan")
    f.set_csv_cell(good_dir / "trace.csv", 18, "energy_j", "nan")
    ev = evidence_io.read_evidence(good_dir)
    assert np.isnan(ev.trace.power_w[16])
    assert np.isnan(ev.trace.energy_j[17])
    assert np.count_nonzero(np.isnan(ev.trace.power_w)) == 1
    rc, out = _full(good_dir, capsys)
    assert rc != ExitCode.BAD_INPUT
    assert json.loads(out)["schema"] == "modelgrid.bench/full/v1"


@pytest.mark.timeout(60)
def test_digests_are_the_sha256_of_the_files(
    good_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    want = {
        "trace_sha256": hashlib.sha256((good_dir / "trace.csv").read_bytes()).hexdigest(),
        "telemetry_sha256": hashlib.sha256((good_dir / "telemetry.csv").read_bytes()).hexdigest(),
        "columns_sha256": hashlib.sha256((good_dir / "trace.npz").read_bytes()).hexdigest(),
    }
    ev = evidence_io.read_evidence(good_dir)
    assert ev.digests is not None
    assert ev.digests.model_dump() == want
    _, out = _full(good_dir, capsys)
    assert json.loads(out)["evidence"] == want


@pytest.mark.timeout(60)
def test_a_live_session_writes_evidence_then_digests_then_analyses(tmp_path: Path) -> None:
    out = tmp_path / "run"
    ev, result = f.simulated_session(out)
    want = {
        "trace_sha256": hashlib.sha256((out / "trace.csv").read_bytes()).hexdigest(),
        "telemetry_sha256": hashlib.sha256((out / "telemetry.csv").read_bytes()).hexdigest(),
        "columns_sha256": hashlib.sha256((out / "trace.npz").read_bytes()).hexdigest(),
    }
    assert ev.digests is not None
    assert ev.digests.model_dump() == want
    assert result.evidence is not None
    assert result.evidence.model_dump() == want
    assert (out / "result.json").is_file()
    back = evidence_io.read_evidence(out)
    assert analyze(back).model_dump_json() == result.model_dump_json()
    proc = analyze_cli(out, "--full")
    assert "Traceback" not in proc.stderr
    assert json.loads(proc.stdout) == json.loads((out / "result.json").read_text())


# --------------------------------------------------------------------------- the trace cache


@pytest.mark.timeout(60)
def test_a_cache_that_disagrees_with_the_csv_is_not_used(
    good_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, want = _full(good_dir, capsys)
    cache = good_dir / "trace.npz"
    with np.load(cache, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    members["power_w"] = members["power_w"] + 1.0  # recorded sha256 still that of trace.csv
    with cache.open("wb") as fh:
        np.savez(fh, **members)

    def from_csv() -> dict[str, Any]:
        rc2, out = _full(good_dir, capsys)
        assert rc2 == rc
        got: dict[str, Any] = json.loads(out)
        assert got["evidence"].pop("columns_sha256") is None  # the CSV was parsed
        return got

    expected = json.loads(want)
    expected["evidence"].pop("columns_sha256")
    assert from_csv() == expected
    cache.write_bytes(b"PK\x03\x04 not a zip")
    assert from_csv() == expected


@pytest.mark.timeout(60)
def test_a_stale_cache_is_ignored(good_dir: Path) -> None:
    f.set_csv_cell(good_dir / "trace.csv", 5, "power_w", "321.5")
    assert evidence_io.read_evidence(good_dir).trace.power_w[4] == 321.5


@pytest.mark.timeout(60)
def test_a_result_read_through_the_cache_names_it_and_no_cache_reads_the_csv(
    good_dir: Path,
) -> None:
    cached = evidence_io.read_evidence(good_dir)
    assert cached.digests is not None
    npz = hashlib.sha256((good_dir / "trace.npz").read_bytes()).hexdigest()
    assert cached.digests.columns_sha256 == npz
    plain = evidence_io.read_evidence(good_dir, use_cache=False)
    assert plain.digests is not None
    assert plain.digests.columns_sha256 is None
    assert plain.digests.trace_sha256 == cached.digests.trace_sha256
    assert np.array_equal(plain.trace.power_w, cached.trace.power_w, equal_nan=True)


@pytest.mark.timeout(60)
def test_a_forged_cache_gives_the_same_answer_every_time(good_dir: Path) -> None:
    # Three rows changed in the middle: the sampled check may miss them, but never by chance:
    # the sample is drawn from the CSV's digest, and the result names the cache it used.
    cache = good_dir / "trace.npz"
    with np.load(cache, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    mid = members["power_w"].size // 2
    members["power_w"][mid : mid + 3] = 4900.0
    with cache.open("wb") as fh:
        np.savez(fh, **members)
    reads = [evidence_io.read_evidence(good_dir) for _ in range(4)]
    peaks = {float(np.max(r.trace.power_w)) for r in reads}
    assert len(peaks) == 1
    digests = {r.digests.columns_sha256 if r.digests else None for r in reads}
    assert len(digests) == 1
    if peaks == {4900.0}:  # read through the forged cache: the result must say so
        assert digests == {hashlib.sha256(cache.read_bytes()).hexdigest()}
