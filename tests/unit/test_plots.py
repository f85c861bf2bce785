"""The report's plots: real PNGs of the expected size, drawn from real and synthetic evidence.

A small real session comes from the benchmark CLI (synthetic inference, replayed power, paced
decode steps so the runs last the same on any machine), run once for the module. Nothing here
reads the network.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from modelgrid_bench.analysis import analyze
from modelgrid_bench.evidence import read_evidence
from modelgrid_bench.records import (
    Evidence,
    Interval,
    RequestRecord,
    RunRecord,
    Telemetry,
    Timeline,
    Trace,
)
from modelgrid_contract.result import BenchmarkResult, PowerSourceKind
from modelgrid_report.plots import (
    DPI,
    FLEET_MAX_HEIGHT_IN,
    CvThreshold,
    FleetPoint,
    PlotError,
    PointState,
    decimate_min_max,
    fleet_cv_png,
    fleet_figure_size_px,
    phase_share,
    power_trace_png,
    run_windows,
    tier_colour,
    trace_figure_size_px,
    trace_title,
)
from tests.factory import bench_cli, known_evidence, meta, workload_flags

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIER1 = CvThreshold(1, "Tier 1 - Low Variance", 0.10, inclusive=False)
TIER2 = CvThreshold(2, "Tier 2 - Medium Variance", 0.15, inclusive=False)


# --------------------------------------------------------------------------- PNG checks


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which a PNG must start with."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR"
    assert length == 13
    width, height = struct.unpack(">II", data[16:24])
    crc = struct.unpack(">I", data[29:33])[0]
    assert crc == zlib.crc32(data[12:29]), "corrupt IHDR"
    return int(width), int(height)


def pixels(path: Path) -> np.ndarray:
    """RGB pixels as uint8 (height, width, 3)."""
    from matplotlib.image import imread

    img = imread(path)
    return np.asarray(np.round(img[..., :3] * 255), dtype=np.uint8)


def distinct_colours(path: Path) -> int:
    px = pixels(path).reshape(-1, 3)
    return int(np.unique(px.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1])).size)


def has_colour(path: Path, colour: str, tol: int = 6) -> bool:
    want = np.array([round(c * 255) for c in to_rgb(colour)], dtype=np.int16)
    diff = np.abs(pixels(path).astype(np.int16) - want).max(axis=-1)
    return bool(np.count_nonzero(diff <= tol) >= 20)


def assert_real_png(path: Path, size: tuple[int, int], *, min_kb: float = 15.0) -> None:
    assert path.is_file()
    assert png_size(path) == size
    assert path.stat().st_size > min_kb * 1024
    assert distinct_colours(path) > 200, "a near-blank figure"
    assert path.stat().st_mode & 0o777 == 0o644, "readable, like any report file"
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], "the temporary file was left behind"


# --------------------------------------------------------------------------- evidence


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Evidence, BenchmarkResult]:
    """A real two-GPU session: idle baseline, one warm-up request, two runs of three
    requests; 10 ms decode steps make each run about 2.4 s (two whole 1 s windows)."""
    out = tmp_path_factory.mktemp("session")
    proc = bench_cli(
        "run",
        "--backend",
        "synthetic",
        "--power-source",
        "replay:builtin:h200-decode",
        "--replay-gpus",
        "2",
        *workload_flags(3, 80, repeats=2, warmup=1, idle_baseline_s=0.5),
        "--synthetic-step-ms",
        "10",
        "--output-dir",
        str(out),
        "--log-level",
        "ERROR",
        timeout_s=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    ev = read_evidence(out)
    result = BenchmarkResult.model_validate_json((out / "result.json").read_text())
    return ev, result


def long_evidence(gpus: int, reads: int, *, requests_per_run: int = 1000) -> Evidence:
    """A long session built from arrays: `reads` reads of every GPU 25 ms apart, power a slow
    sine with noise, the energy counter its running integral, three runs of many requests."""
    rng = np.random.default_rng(7)
    t_read = 0.0037 + 0.025 * np.arange(reads, dtype=np.float64)
    t = np.repeat(t_read, gpus)
    gpu = np.tile(np.arange(gpus, dtype=np.int64), reads)
    power = 300.0 + 50.0 * np.sin(t / 7.0) + rng.normal(0.0, 15.0, t.size) + 20.0 * gpu
    energy = np.empty_like(power)
    for g in range(gpus):
        m = gpu == g
        steps = np.diff(t[m]) * power[m][1:]
        energy[m] = 1e6 + np.concatenate(([0.0], np.cumsum(steps)))
    nan = np.full(t.size, np.nan)
    end = float(t_read[-1])
    edges = np.linspace(40.0, end - 5.0, 4)
    runs = []
    for i in range(3):
        a, b = float(edges[i]), float(edges[i + 1])
        starts = np.linspace(a, b, requests_per_run + 1)
        reqs = [
            RequestRecord(
                start_s=float(lo),
                first_token_s=float(lo) + 0.02,
                end_s=float(hi),
                input_tokens=8,
                output_tokens=10,
            )
            for lo, hi in itertools.pairwise(starts)
        ]
        runs.append(RunRecord(index=i, start_s=a, end_s=b, requests=reqs))
    timeline = Timeline(
        baseline=Interval(start_s=1.0, end_s=20.0),
        warmup=[
            RequestRecord(
                start_s=21.0, first_token_s=21.1, end_s=39.0, input_tokens=8, output_tokens=10
            )
        ],
        runs=runs,
    )
    return Evidence(
        meta=meta(gpus=gpus),
        timeline=timeline,
        trace=Trace(t, gpu, power, nan, energy, nan, nan),
        telemetry=Telemetry(),
    )


# --------------------------------------------------------------------------- power trace


@pytest.mark.timeout(240)
def test_trace_of_a_real_session(session: tuple[Evidence, BenchmarkResult], tmp_path: Path) -> None:
    ev, result = session
    out = power_trace_png(ev, result, tmp_path / "a" / "b" / "trace.png", title="2x H200")
    assert out == tmp_path / "a" / "b" / "trace.png"
    assert_real_png(out, trace_figure_size_px(), min_kb=30)
    assert trace_figure_size_px() == (1200, 700)


@pytest.mark.timeout(240)
def test_the_title_says_simulated(session: tuple[Evidence, BenchmarkResult]) -> None:
    ev, result = session
    assert trace_title(ev, result, "run") == "run (simulated)"
    assert trace_title(ev, None, "run") == "run (simulated)"
    assert trace_title(known_evidence(), None, "run") == "run"


def test_trace_from_evidence_alone(tmp_path: Path) -> None:
    ev = known_evidence(gpus=2)
    out = power_trace_png(ev, None, tmp_path / "known.png", title="square wave")
    assert_real_png(out, (1200, 700))


def test_trace_with_its_analysis_and_an_existing_file(tmp_path: Path) -> None:
    ev = known_evidence()
    path = tmp_path / "trace.png"
    path.write_bytes(b"old")
    power_trace_png(ev, analyze(ev), path, title="replaced")
    assert_real_png(path, (1200, 700))


@pytest.mark.timeout(60)
def test_a_long_trace_renders(tmp_path: Path) -> None:
    """2 GPUs x 200k reads (83 minutes at 25 ms) and 3000 requests: decimated, not slow."""
    ev = long_evidence(2, 200_000)
    out = power_trace_png(ev, None, tmp_path / "long.png", title="long")
    assert_real_png(out, (1200, 700))
    assert ev.trace.power_w.size == 400_000, "the evidence is not changed"


def test_no_samples_is_an_error(tmp_path: Path) -> None:
    ev = known_evidence()
    ev.trace = Trace.empty()
    with pytest.raises(PlotError, match="no power samples"):
        power_trace_png(ev, None, tmp_path / "x.png", title="empty")
    assert not (tmp_path / "x.png").exists()


def test_all_nan_power_is_an_error(tmp_path: Path) -> None:
    ev = known_evidence()
    ev.trace.power_w = np.full(ev.trace.power_w.size, np.nan)
    with pytest.raises(PlotError, match="NaN") as err:
        power_trace_png(ev, None, tmp_path / "x.png", title="nan")
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_not_simulated_source_has_no_note() -> None:
    ev = known_evidence()
    assert ev.meta.power_source.kind is PowerSourceKind.NVML
    assert "simulated" not in trace_title(ev, analyze(ev), "t")


# --------------------------------------------------------------------------- drawing helpers


@pytest.mark.parametrize("gpus", [1, 2])
def test_window_means_are_the_analysis_windows(gpus: int) -> None:
    """The bottom panel shows the windows the tier metric is computed over: same count, same
    per-run CV as the analysis."""
    ev = known_evidence(gpus=gpus)
    result = analyze(ev)
    windows = run_windows(ev, result.cv_time_scale_s)
    assert [w.run for w in windows] == [r.run for r in result.runs]
    assert [w.power_w.size for w in windows] == [r.windows_1s for r in result.runs]
    assert [int(w.excluded.sum()) for w in windows] == [r.windows_excluded for r in result.runs]
    assert [w.cv for w in windows] == [r.power_cv_1s for r in result.runs]


@pytest.mark.timeout(240)
def test_window_means_of_a_real_session(session: tuple[Evidence, BenchmarkResult]) -> None:
    ev, result = session
    windows = run_windows(ev)
    assert [w.cv for w in windows] == [r.power_cv_1s for r in result.runs]
    assert all(w.cv is not None for w in windows), "each run has two whole windows"
    for w in windows:
        assert np.diff(w.left_s).tolist() == pytest.approx([1.0] * (w.left_s.size - 1))


def test_decimation_keeps_every_extreme() -> None:
    x = np.linspace(0.0, 100.0, 100_001)
    y = np.sin(x)
    y[12_345] = 50.0  # one spike among a hundred thousand reads
    y[67_890] = -40.0
    xd, yd = decimate_min_max(x, y, 0.0, 100.0, 500)
    assert xd.size <= 1000
    assert yd.max() == 50.0
    assert yd.min() == -40.0
    assert bool(np.all(np.diff(xd) >= 0))


def test_decimation_leaves_short_input_alone() -> None:
    x = np.arange(10.0)
    y = x**2
    xd, yd = decimate_min_max(x, y, 0.0, 9.0, 100)
    assert xd is x
    assert yd is y


def test_decimation_ignores_nan_but_keeps_gaps() -> None:
    x = np.arange(1000.0)
    y = np.ones(1000)
    y[::2] = np.nan
    y[500:600] = np.nan
    _, yd = decimate_min_max(x, y, 0.0, 1000.0, 100)
    assert np.nanmax(yd) == 1.0
    assert int(np.count_nonzero(np.isnan(yd))) == 20  # the 10 all-NaN columns, min and max


def test_phase_share_is_exact() -> None:
    spans = [(0.0, 0.5), (1.25, 1.5), (3.0, 4.0)]
    share = phase_share(spans, 0.0, 4.0, 4)
    assert share.tolist() == [0.5, 0.25, 0.0, 1.0]
    assert phase_share([], 0.0, 1.0, 3).tolist() == [0.0, 0.0, 0.0]


# --------------------------------------------------------------------------- fleet


def seed_fleet() -> list[FleetPoint]:
    """Seed 000's six models, plus one refused and one still running."""
    t = PointState.TIERED
    return [
        FleetPoint("DeepSeek-R1-Distill (32B)", 0.1651, 0.150, 0.181, 3, "Tier 3 - High", t),
        FleetPoint("Llama-4-Scout (17B)", 0.1245, 0.110, 0.139, 2, "Tier 2 - Medium", t),
        FleetPoint("Llama-4-Maverick (17B)", 0.0848, 0.070, 0.095, 1, "Tier 1 - Low", t),
        FleetPoint("Qwen3-32B", 0.0753, None, None, 1, "Tier 1 - Low", t),
        FleetPoint("Qwen3-235B", 0.0324, 0.030, None, 1, "Tier 1 - Low", t),
        FleetPoint("GPT-OSS-20B", 0.0282, 0.025, 0.031, 1, "Tier 1 - Low", t),
        FleetPoint("Mistral-Large", 0.21, None, None, None, "", PointState.REFUSED),
        FleetPoint("Gemma-3-27B", None, None, None, None, "", PointState.RUNNING),
    ]


def test_fleet_with_tiered_refused_and_running(tmp_path: Path) -> None:
    points = seed_fleet()
    out = fleet_cv_png(points, [TIER1, TIER2], tmp_path / "fleet" / "cv.png", title="Fleet")
    assert_real_png(out, fleet_figure_size_px(len(points)))
    for tier in (1, 2, 3):
        assert has_colour(out, tier_colour(tier)), f"tier {tier}'s colour is missing"


def test_fleet_of_many_models_is_capped_and_renders(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    points = []
    for i in range(150):
        cv = float(rng.uniform(0.01, 0.25))
        number = 1 if cv < 0.10 else 2 if cv < 0.15 else 3
        points.append(
            FleetPoint(
                f"model-{i:03d}-with-a-rather-long-name-that-needs-shortening",
                cv,
                cv * 0.9,
                cv * 1.1,
                number,
                f"Tier {number}",
                PointState.TIERED if i % 10 else PointState.REFUSED,
            )
        )
    out = fleet_cv_png(points, [TIER1, TIER2], tmp_path / "many.png", title="150 models")
    size = fleet_figure_size_px(150)
    assert size == (1200, round(FLEET_MAX_HEIGHT_IN * DPI))
    assert_real_png(out, size)


def test_fleet_size_grows_with_models() -> None:
    sizes = [fleet_figure_size_px(n)[1] for n in (1, 8, 40, 100, 1000)]
    assert sizes == sorted(sizes)
    assert {fleet_figure_size_px(n)[0] for n in (1, 1000)} == {1200}


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([], "no models"),
        (
            [FleetPoint("a", None, None, None, None, "", PointState.RUNNING)],
            "none of the 1 models has a finite CV",
        ),
        (
            [FleetPoint("a", float("nan"), None, None, None, "", PointState.REFUSED)],
            "finite CV",
        ),
        ([FleetPoint("a", None, None, None, 1, "Tier 1", PointState.TIERED)], "tiered but"),
    ],
)
def test_unusable_fleet_is_an_error(
    points: Sequence[FleetPoint], message: str, tmp_path: Path
) -> None:
    with pytest.raises(PlotError, match=message):
        fleet_cv_png(points, [TIER1], tmp_path / "x.png", title="t")
    assert list(tmp_path.iterdir()) == []


def test_point_state_from_text() -> None:
    p = FleetPoint("a", 0.1, None, None, None, "", "refused")  # type: ignore[arg-type]
    assert p.state is PointState.REFUSED
    with pytest.raises(ValueError, match="'priced'"):
        FleetPoint("a", 0.1, None, None, None, "", "priced")  # type: ignore[arg-type]


def test_threshold_labels_and_tier_colours() -> None:
    assert TIER1.text == "Tier 1 - Low Variance: CV < 0.10"
    assert CvThreshold(2, "Tier 2", 0.15, inclusive=True).text == "Tier 2: CV ≤ 0.15"
    assert CvThreshold(2, "Tier 2", 0.125, inclusive=True).text == "Tier 2: CV ≤ 0.125"
    assert [tier_colour(n) for n in (1, 2, 3)] == ["#2e7d32", "#ffb300", "#c62828"]
    more = [tier_colour(n) for n in range(4, 10)]
    assert len(set(more)) == len(more)
    assert not set(more) & {tier_colour(n) for n in (1, 2, 3)}
