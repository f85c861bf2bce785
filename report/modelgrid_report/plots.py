"""Headless plots of the program's evidence: one session's power trace, and the fleet's CV.

`power_trace_png` draws what one qualification's benchmark measured (instant power per GPU, the
idle baseline, warm-up and measured runs, prefill and decode, and the 1 s window means the tier
metric is computed over); `fleet_cv_png` draws the fleet's tier metric per model, with its 95 %
interval, against a policy's CV thresholds (seed 000's tiering figure, done honestly). Both
write a PNG file (atomically: a temporary file in the target directory, then `os.replace`) and
return its path; neither measures anything. Matplotlib is used through `Figure` and the Agg
canvas directly, never pyplot, so no global state or display is touched.

Long traces are decimated for drawing only: the samples are split into a fixed number of time
columns (about two per pixel of the plot) and each column is drawn as a vertical stroke from
its minimum to its maximum, so every spike stays visible while a line never has more than
`2 * TRACE_COLUMNS` points. Prefill and decode are strips of one cell per pixel, shaded by the
share of that pixel's time spent in the phase, so thousands of requests stay one strip. The
measured values are never changed; window means are computed from the full trace with the
analysis's own functions.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from modelgrid_bench.analysis import EnergyModel, energy_model
from modelgrid_bench.records import Evidence, RequestRecord, Trace
from modelgrid_bench.stats import (
    FloatArray,
    coefficient_of_variation,
    phase_segments,
    window_powers_w,
)
from modelgrid_contract.result import TIER_METRIC_TIME_SCALE_S, BenchmarkResult

#: Both figures are drawn at this resolution; sizes below are in inches.
DPI = 100
#: Permissions of a written figure (as an ordinary file written with the usual umask).
FILE_MODE = 0o644
#: The power trace figure: 1200 x 700 px.
TRACE_SIZE_IN = (12.0, 7.0)
#: The trace panels' margins (figure fractions): the right one holds the legends.
TRACE_LEFT, TRACE_RIGHT = 0.08, 0.81
#: Time columns a trace is decimated to (about two per pixel of the plot's width).
TRACE_COLUMNS = 2000
#: Opacity of a pixel of the prefill or decode strip that the phase only touches: a prefill
#: of 3 ms is far less than a pixel of a long trace, yet must be seen.
MIN_PHASE_ALPHA = 0.5
#: Shares of a column below this are rounding, not time spent in a phase.
SHARE_DUST = 1e-6
#: Window means get a dot each while a window is at least this many pixels wide.
MIN_MARKED_WINDOW_PX = 6.0
#: Runs labelled one by one in the legend; more share one entry.
MAX_LABELLED_RUNS = 8

#: The fleet figure: fixed width; its height grows with the number of models, capped.
FLEET_WIDTH_IN = 12.0
FLEET_ROW_IN = 0.26
FLEET_TOP_IN = 0.85
FLEET_BOTTOM_IN = 1.25
FLEET_LEFT_IN = 3.1
FLEET_RIGHT_IN = 3.5
FLEET_MIN_HEIGHT_IN = 4.0
FLEET_MAX_HEIGHT_IN = 32.0
#: Model names longer than this are shortened (with an ellipsis) to fit the left margin.
MAX_NAME_CHARS = 40
#: Up to this many models, each point carries its CV as text.
MAX_VALUE_LABELS = 60

#: Tier colours, fixed so every figure agrees: 1 green, 2 amber, 3 red; more from tab10.
TIER_COLOURS = {1: "#2e7d32", 2: "#ffb300", 3: "#c62828"}
_MORE_TIER_COLOURS = (0, 4, 5, 6, 8, 9)  # tab10 without its green, orange, red and grey
NOT_TIERED_COLOUR = "#9e9e9e"
NOT_TIERED_HATCH = "#c8c8c8"

_GPU_COLOURS = colormaps["tab10"]
_RUN_SHADES = colormaps["Pastel1"]
_BASELINE_SHADE = "#bdbdbd"
_WARMUP_SHADE = "#ffcc80"
_PREFILL_COLOUR = "#d81b60"
_DECODE_COLOUR = "#00897b"


class PlotError(ValueError):
    """The input cannot make a meaningful figure (no samples, every value NaN, no models)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class PointState(StrEnum):
    """Where a model of the fleet stands: priced into a tier, refused, failed, or measuring."""

    TIERED = "tiered"
    REFUSED = "refused"
    #: the benchmark failed or could not run: nothing was measured to price
    FAILED = "failed"
    #: holds no price now (blocked, a verdict for an earlier spec, no tier fits, a rerun due)
    NOT_PRICED = "not priced"
    RUNNING = "running"


@dataclass(frozen=True)
class FleetPoint:
    """One model of the fleet: its tier metric (CV) and 95 % interval, and its tier or state.

    A refused or running model holds no tier whatever its CV; `tier_number` is then ignored.
    """

    model: str
    cv: float | None
    cv_low: float | None
    cv_high: float | None
    tier_number: int | None
    tier_label: str
    state: PointState

    def __post_init__(self) -> None:
        # A plain string ("refused") is accepted and checked, so callers reading JSON need not
        # convert; an unknown state fails here rather than being drawn as something it is not.
        object.__setattr__(self, "state", PointState(self.state))


@dataclass(frozen=True)
class CvThreshold:
    """A policy tier's CV limit: a model is in the tier when its CV is below `max_cv` (or at
    it, when `inclusive`)."""

    tier_number: int
    label: str
    max_cv: float
    inclusive: bool

    @property
    def text(self) -> str:
        """The legend text, e.g. "Tier 1 - Low Variance: CV < 0.10"."""
        return f"{self.label}: CV {'≤' if self.inclusive else '<'} {_cv_text(self.max_cv)}"


def tier_colour(tier_number: int) -> str:
    """The colour of a tier in every figure: 1 green, 2 amber, 3 red, then tab10 colours."""
    if tier_number in TIER_COLOURS:
        return TIER_COLOURS[tier_number]
    index = _MORE_TIER_COLOURS[(tier_number - 4) % len(_MORE_TIER_COLOURS)]
    r, g, b, _ = colormaps["tab10"](index)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def fleet_figure_size_px(models: int) -> tuple[int, int]:
    """The fleet figure's (width, height) in pixels for this many models."""
    w_in, h_in = _fleet_size_in(models)
    return round(w_in * DPI), round(h_in * DPI)


def trace_figure_size_px() -> tuple[int, int]:
    """The power trace figure's (width, height) in pixels (always the same)."""
    return round(TRACE_SIZE_IN[0] * DPI), round(TRACE_SIZE_IN[1] * DPI)


# --------------------------------------------------------------------------- writing


def _new_figure(size_in: tuple[float, float]) -> Figure:
    fig = Figure(figsize=size_in, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    """Write the figure as PNG at exactly its size (no tight bounding box, which would change
    the pixel size with the labels), through a temporary file so a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            # mkstemp makes the file private (0600); a published figure is for its readers.
            os.fchmod(fh.fileno(), FILE_MODE)
            fig.savefig(fh, format="png", dpi=DPI, metadata={"Software": None})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _cv_text(cv: float) -> str:
    """Two decimals when they are exact (policy limits: 0.10), else four significant digits."""
    two = f"{cv:.2f}"
    return two if math.isclose(float(two), cv, rel_tol=0.0, abs_tol=1e-12) else f"{cv:.4g}"


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


# --------------------------------------------------------------------------- power trace


@dataclass(frozen=True)
class _Clock:
    """The plot's time axis: seconds since the trace's first sample, over [0, span_s]."""

    t0_s: float
    span_s: float

    def x(self, t_s: float) -> float:
        return t_s - self.t0_s

    @property
    def pixel_s(self) -> float:
        plot_px = TRACE_SIZE_IN[0] * DPI * (TRACE_RIGHT - TRACE_LEFT)
        return self.span_s / plot_px


@dataclass(frozen=True)
class RunWindows:
    """One run's whole windows as the tier metric sees them: their left edges (s, sampler
    clock), mean power (W, all GPUs, from the energy model the analysis uses), which a sampler
    gap overlaps (left out of the metric, as the analysis leaves them out) and the CV of the
    others (None with fewer than two)."""

    run: int
    left_s: FloatArray
    power_w: FloatArray
    excluded: npt.NDArray[np.bool_]
    cv: float | None


def _check_trace(trace: Trace) -> _Clock:
    if trace.t_s.size == 0:
        raise PlotError("the evidence has no power samples")
    ok = np.isfinite(trace.t_s) & np.isfinite(trace.power_w)
    if not bool(np.any(ok)):
        raise PlotError(f"all {trace.t_s.size} power samples are NaN")
    t = trace.t_s[np.isfinite(trace.t_s)]
    t0, t1 = float(np.min(t)), float(np.max(t))
    # A lone sample still gets a second of axis, so nothing below divides by zero.
    return _Clock(t0, t1 - t0 if t1 > t0 else 1.0)


def decimate_min_max(
    x: FloatArray, y: FloatArray, x0: float, x1: float, columns: int
) -> tuple[FloatArray, FloatArray]:
    """Points that draw (x, y) at `columns` columns over [x0, x1] as it would look drawn whole.

    Each non-empty column becomes two points at its centre, its minimum and its maximum (NaN
    ignored; a column of NaN only is NaN, a gap in the line). With at most 2 * columns samples
    the input is returned as it is. For drawing only: the values are never used to measure.
    """
    if x.size <= 2 * columns or not x1 > x0:
        return x, y
    if not bool(np.all(np.diff(x) >= 0)):
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
    width = (x1 - x0) / columns
    edges = x0 + width * np.arange(columns, dtype=np.float64)
    starts = np.unique(np.searchsorted(x, edges, side="left"))
    starts = starts[starts < x.size]
    if starts.size == 0 or starts[0] != 0:
        starts = np.concatenate(([0], starts))
    column = np.clip(np.floor((x[starts] - x0) / width), 0, columns - 1)
    centre = x0 + (column + 0.5) * width
    low = np.fmin.reduceat(y, starts)
    high = np.fmax.reduceat(y, starts)
    return np.repeat(centre, 2), np.column_stack((low, high)).ravel()


def phase_share(
    spans: Sequence[tuple[float, float]], x0: float, x1: float, columns: int
) -> FloatArray:
    """The share (0 to 1) of each of `columns` equal columns over [x0, x1] that the spans
    cover; `spans` are sorted and do not overlap (as `phase_segments` returns them). Exact
    however many spans there are: the covered time is a running sum read at column edges."""
    if not spans:
        return np.zeros(columns)
    a = np.asarray(spans, dtype=np.float64)
    before = np.concatenate(([0.0], np.cumsum(a[:, 1] - a[:, 0])[:-1]))
    knots_x = a.ravel()
    knots_c = np.column_stack((before, before + a[:, 1] - a[:, 0])).ravel()
    edges = np.linspace(x0, x1, columns + 1)
    share = np.clip(np.diff(np.interp(edges, knots_x, knots_c)) / ((x1 - x0) / columns), 0, 1)
    # Differences of a running sum leave rounding dust (1e-16) in columns no span touches,
    # which the strip would show as a phase: a millionth of a column is nothing.
    return np.asarray(np.where(share > SHARE_DUST, share, 0.0), dtype=np.float64)


def _share_strip(share: FloatArray, colour: str) -> FloatArray:
    """RGBA pixels of a strip: any time in the phase shows (a 3 ms prefill in a pixel of
    10 ms is still seen), and the more of a pixel it fills, the darker."""
    rgba = np.zeros((1, share.size, 4))
    rgba[0, :, :3] = to_rgb(colour)
    rgba[0, :, 3] = np.where(share > 0, MIN_PHASE_ALPHA + (1 - MIN_PHASE_ALPHA) * share, 0.0)
    return rgba


def run_windows(ev: Evidence, window_s: float = TIER_METRIC_TIME_SCALE_S) -> list[RunWindows]:
    """Each run's window means, computed from the whole trace with the analysis's functions
    (`energy_model`, `window_powers_w`), so a run's `cv` is its `power_cv_1s` at 1 s."""
    per_gpu = [ev.trace.for_gpu(g) for g in ev.trace.gpus]
    if not per_gpu:
        return []
    return _run_windows(ev, energy_model(per_gpu, ev.meta.sampler.interval_s), window_s)


def _run_windows(ev: Evidence, energy: EnergyModel, window_s: float) -> list[RunWindows]:
    out: list[RunWindows] = []
    for run in ev.timeline.runs:
        w = window_powers_w(energy.at, run.start_s, run.end_s, window_s)
        lo = run.start_s + window_s * np.arange(w.size, dtype=np.float64)
        excluded = np.zeros(w.size, dtype=bool)
        for g0, g1 in energy.gaps:
            excluded |= (g0 < lo + window_s) & (g1 > lo)
        kept = w[~excluded]
        cv = coefficient_of_variation(kept) if kept.size >= 2 else None
        out.append(RunWindows(run.index, lo, w, excluded, cv))
    return out


def _shade_spans(ax: Axes, ev: Evidence, clock: _Clock, *, labels: bool) -> None:
    """Baseline, warm-up and measured runs as shaded spans (labelled once, on one panel)."""
    tl = ev.timeline
    if tl.baseline is not None:
        ax.axvspan(
            clock.x(tl.baseline.start_s),
            clock.x(tl.baseline.end_s),
            color=_BASELINE_SHADE,
            alpha=0.45,
            lw=0,
            label="idle baseline" if labels else None,
        )
    if tl.warmup:
        ax.axvspan(
            clock.x(min(r.start_s for r in tl.warmup)),
            clock.x(max(r.end_s for r in tl.warmup)),
            color=_WARMUP_SHADE,
            alpha=0.45,
            lw=0,
            label="warm-up" if labels else None,
        )
    each = len(tl.runs) <= MAX_LABELLED_RUNS
    swept = len({run.concurrency for run in tl.runs}) > 1  # a sweep: say each run's level
    for i, run in enumerate(tl.runs):
        label = None
        if labels and (each or i == 0):
            level = f" (concurrency {run.concurrency})" if swept else ""
            label = f"run {run.index + 1}{level}" if each else f"measured runs ({len(tl.runs)})"
        ax.axvspan(
            clock.x(run.start_s),
            clock.x(run.end_s),
            color=_RUN_SHADES(i % 9 if each else i % 2),
            alpha=0.55,
            lw=0,
            label=label,
        )


def _draw_power(ax: Axes, trace: Trace, clock: _Clock) -> None:
    for gpu in trace.gpus:
        g = trace.for_gpu(gpu)
        x, y = decimate_min_max(g.t_s - clock.t0_s, g.power_w, 0.0, clock.span_s, TRACE_COLUMNS)
        ax.plot(x, y, lw=0.8, color=_GPU_COLOURS(gpu % 10), label=f"GPU {gpu}")
    ax.set_ylabel("instant power (W)")
    ax.set_ylim(bottom=0.0)
    ax.grid(True, axis="y", alpha=0.3)


def _all_requests(ev: Evidence) -> list[RequestRecord]:
    return [*ev.timeline.warmup, *(q for r in ev.timeline.runs for q in r.requests)]


def _draw_phases(ax: Axes, ev: Evidence, clock: _Clock) -> None:
    """Prefill (request start to first token) and decode (first token to end) as two strips,
    split as the analysis splits them: an instant with any request in prefill is prefill."""
    reqs = _all_requests(ev)
    pre, dec = phase_segments(
        [(clock.x(r.start_s), clock.x(r.first_token_s)) for r in reqs],
        [(clock.x(r.first_token_s), clock.x(r.end_s)) for r in reqs],
    )
    columns = round(clock.span_s / clock.pixel_s)
    for spans, colour, y in ((pre, _PREFILL_COLOUR, 1.1), (dec, _DECODE_COLOUR, 0.1)):
        share = phase_share(spans, 0.0, clock.span_s, columns)
        ax.imshow(
            _share_strip(share, colour),
            extent=(0.0, clock.span_s, y, y + 0.8),
            aspect="auto",
            interpolation="nearest",
            zorder=2,
        )
    ax.set_ylim(0.0, 2.0)
    ax.set_yticks([0.5, 1.5], ["decode", "prefill"], fontsize=8)
    ax.tick_params(axis="y", length=0)
    if not reqs:
        ax.text(0.5, 0.5, "no requests recorded", transform=ax.transAxes, ha="center", va="center")


def _draw_window_means(
    ax: Axes,
    used: list[tuple[FloatArray, FloatArray]],
    window_s: float,
    pixel_s: float,
    *,
    label: str,
) -> None:
    """Each window as a bar over its second with a dot while windows are several pixels wide;
    narrower ones would dissolve into specks, so then a line through their centres, decimated
    like the trace, run by run (a NaN between runs keeps them apart)."""
    colour = "#1a237e"
    if window_s >= MIN_MARKED_WINDOW_PX * pixel_s:
        lo = np.concatenate([u[0] for u in used])
        p = np.concatenate([u[1] for u in used])
        ax.hlines(p, lo, lo + window_s, color=colour, lw=1.6, label=label)
        ax.plot(lo + window_s / 2, p, "o", ms=3, color=colour)
        return
    gap = np.array([np.nan])
    xs: list[FloatArray] = []
    ys: list[FloatArray] = []
    for left_s, power_w in used:
        if left_s.size == 0:
            continue
        x = left_s + window_s / 2
        columns = max(round(float(x[-1] - x[0]) / pixel_s), 1)
        xd, yd = decimate_min_max(x, power_w, float(x[0]), float(x[-1]), columns)
        xs += [xd, gap]
        ys += [yd, gap]
    if xs:
        ax.plot(np.concatenate(xs), np.concatenate(ys), color=colour, lw=0.8, label=label)


def _draw_windows(
    ax: Axes,
    windows: list[RunWindows],
    window_s: float,
    idle_power_w: float | None,
    clock: _Clock,
) -> None:
    pixel_s = clock.pixel_s
    used = [(w.left_s[~w.excluded] - clock.t0_s, w.power_w[~w.excluded]) for w in windows]
    skipped = [(w.left_s[w.excluded] - clock.t0_s, w.power_w[w.excluded]) for w in windows]
    lo = np.concatenate([u[0] for u in used]) if used else np.zeros(0)
    p = np.concatenate([u[1] for u in used]) if used else np.zeros(0)
    scale = f"{window_s:g} s"
    if lo.size:
        _draw_window_means(ax, used, window_s, pixel_s, label=f"{scale} window mean")
    x_lo = np.concatenate([s[0] for s in skipped]) if skipped else np.zeros(0)
    if x_lo.size:
        x_p = np.concatenate([s[1] for s in skipped])
        ax.plot(x_lo + window_s / 2, x_p, "x", color="#757575", label="excluded (sampler gap)")
    if idle_power_w is not None:
        ax.axhline(idle_power_w, color="#616161", ls="--", lw=1.0, label="idle baseline mean")
    if not lo.size and not x_lo.size:
        ax.text(
            0.5, 0.5, f"no whole {scale} window in any run", transform=ax.transAxes, ha="center"
        )
    _headroom(ax, [p, *(s[1] for s in skipped)], idle_power_w)
    ax.set_ylabel(f"{scale} mean power,\nall GPUs (W)")
    ax.grid(True, axis="y", alpha=0.3)


def _headroom(ax: Axes, values: list[FloatArray], idle_power_w: float | None) -> None:
    """Leave the top quarter of the panel free for the runs' CV labels."""
    v = np.concatenate([*values, np.array([] if idle_power_w is None else [idle_power_w])])
    v = v[np.isfinite(v)]
    if v.size == 0:
        return
    lo, hi = float(np.min(v)), float(np.max(v))
    pad = max(hi - lo, abs(hi) * 0.02, 1.0)
    ax.set_ylim(lo - 0.1 * pad, hi + 0.45 * pad)


def _label_run_cvs(ax: Axes, ev: Evidence, windows: list[RunWindows], clock: _Clock) -> None:
    """Each run's CV of its window means, written above its span."""
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for run, w in zip(ev.timeline.runs, windows, strict=True):
        text = f"CV {w.cv:.4f}" if w.cv is not None else "CV n/a"
        mid = clock.x((run.start_s + run.end_s) / 2)
        ax.text(mid, 0.97, text, transform=top, ha="center", va="top", fontsize=7)


def _idle_power_w(ev: Evidence, energy: EnergyModel) -> float | None:
    base = ev.timeline.baseline
    if base is None or base.end_s <= base.start_s:
        return None
    return energy.between(base.start_s, base.end_s) / (base.end_s - base.start_s)


def _trace_subtitle(ev: Evidence, result: BenchmarkResult | None) -> str:
    meta = ev.meta
    gpus = len(ev.trace.gpus)
    parts = [
        f"{meta.backend.kind} backend, model {meta.backend.model}",
        f"power: {meta.power_source.detail or meta.power_source.kind.value}",
        f"{gpus} GPU{'s' if gpus != 1 else ''}",
    ]
    pooled = result.pooled if result is not None else None
    if pooled is not None and pooled.power_cv is not None:
        ci = pooled.power_cv_ci95
        interval = f" (95 % CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else " (no 95 % interval)"
        parts.append(f"{result.tier_metric if result else ''} = {pooled.power_cv:.4f}{interval}")
    if result is not None and result.refusal is not None:
        parts.append(f"refused: {result.refusal.reason}")
    return "; ".join(parts)


def trace_title(ev: Evidence, result: BenchmarkResult | None, title: str) -> str:
    """The trace figure's title: `title`, with " (simulated)" when the power source or the
    backend was simulated (by the evidence or by its result)."""
    simulated = ev.meta.power_source.simulated or ev.meta.backend.simulated
    simulated |= result is not None and result.simulated
    return f"{title} (simulated)" if simulated else title


def power_trace_png(
    ev: Evidence, result: BenchmarkResult | None, path: Path, *, title: str
) -> Path:
    """Draw one session's power trace to `path` (PNG, 1200 x 700 px) and return the path.

    Top: instant power per GPU (decimated min/max per time column) over seconds since the
    trace's first sample, on the idle baseline, warm-up and each measured run shaded. Middle:
    prefill and decode strips. Bottom: the mean power of each whole window (the result's CV
    time scale, 1 s by default) that the tier metric is computed over, total of all GPUs, with
    each run's CV. Raises `PlotError` when the trace has no usable sample.
    """
    clock = _check_trace(ev.trace)
    window_s = result.cv_time_scale_s if result is not None else TIER_METRIC_TIME_SCALE_S
    per_gpu = [ev.trace.for_gpu(g) for g in ev.trace.gpus]
    energy = energy_model(per_gpu, ev.meta.sampler.interval_s)
    windows = _run_windows(ev, energy, window_s)

    fig = _new_figure(TRACE_SIZE_IN)
    grid = fig.add_gridspec(3, 1, height_ratios=(3.2, 0.45, 1.6), hspace=0.12)
    ax_p = fig.add_subplot(grid[0])
    ax_ph = fig.add_subplot(grid[1], sharex=ax_p)
    ax_w = fig.add_subplot(grid[2], sharex=ax_p)
    fig.subplots_adjust(left=TRACE_LEFT, right=TRACE_RIGHT, top=0.89, bottom=0.08)
    # The phase strip is left unshaded: its colours are its meaning.
    _shade_spans(ax_p, ev, clock, labels=True)
    _shade_spans(ax_w, ev, clock, labels=False)
    _draw_power(ax_p, ev.trace, clock)
    _draw_phases(ax_ph, ev, clock)
    _draw_windows(ax_w, windows, window_s, _idle_power_w(ev, energy), clock)
    _label_run_cvs(ax_w, ev, windows, clock)
    ax_p.tick_params(labelbottom=False)
    ax_ph.tick_params(labelbottom=False)
    ax_w.set_xlabel("time (s) since the start of the trace")
    ax_w.set_xlim(0.0, clock.span_s)
    ax_p.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax_w.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax_ph.legend(
        handles=[
            Patch(color=_PREFILL_COLOUR, label="prefill (to 1st token)"),
            Patch(color=_DECODE_COLOUR, label="decode (1st token to end)"),
        ],
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        fontsize=8,
        title="shade: share of the time",
        title_fontsize=7,
        frameon=False,
    )
    fig.suptitle(trace_title(ev, result, title), fontsize=13)
    fig.text(0.5, 0.925, _trace_subtitle(ev, result), ha="center", fontsize=8.5, color="#424242")
    return _save(fig, path)


# --------------------------------------------------------------------------- fleet


def _fleet_size_in(models: int) -> tuple[float, float]:
    height = FLEET_TOP_IN + FLEET_BOTTOM_IN + FLEET_ROW_IN * max(models, 1)
    return FLEET_WIDTH_IN, min(max(height, FLEET_MIN_HEIGHT_IN), FLEET_MAX_HEIGHT_IN)


def _check_points(points: Sequence[FleetPoint]) -> None:
    if not points:
        raise PlotError("no models to plot")
    for p in points:
        if p.state is PointState.TIERED and (_finite(p.cv) is None or p.tier_number is None):
            raise PlotError(f"model {p.model!r} is tiered but has no finite CV or tier number")
    if not any(_finite(p.cv) is not None for p in points):
        raise PlotError(f"none of the {len(points)} models has a finite CV")


def _order(points: Sequence[FleetPoint]) -> list[FleetPoint]:
    """Tiered models by CV (lowest, the steadiest, at the top), then refused, then running."""
    return sorted(points, key=_row_key)


_STATE_RANK = {
    PointState.TIERED: 0,
    PointState.REFUSED: 1,
    PointState.FAILED: 2,
    PointState.NOT_PRICED: 3,
    PointState.RUNNING: 4,
}


def _row_key(p: FleetPoint) -> tuple[int, float, str]:
    cv = _finite(p.cv) if p.state is PointState.TIERED else None
    return _STATE_RANK[p.state], cv if cv is not None else 0.0, p.model


def _short(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1] + "…"


def _has_interval(p: FleetPoint) -> bool:
    return _finite(p.cv_low) is not None and _finite(p.cv_high) is not None


def _x_max(points: Sequence[FleetPoint], thresholds: Sequence[CvThreshold]) -> float:
    values = [v for p in points for v in (p.cv, p.cv_high) if _finite(v) is not None]
    values += [t.max_cv for t in thresholds if math.isfinite(t.max_cv)]
    top = max((float(v) for v in values if v is not None), default=0.0)
    return top * 1.12 if top > 0 else 1.0


def _draw_thresholds(ax: Axes, thresholds: Sequence[CvThreshold]) -> list[Line2D]:
    handles: list[Line2D] = []
    lower = 0.0
    for t in sorted(thresholds, key=lambda t: t.max_cv):
        if not math.isfinite(t.max_cv):
            continue
        colour = tier_colour(t.tier_number)
        ax.axvspan(lower, t.max_cv, color=colour, alpha=0.07, lw=0, zorder=0)
        line = ax.axvline(t.max_cv, color=colour, ls="--", lw=1.4, zorder=1, label=t.text)
        handles.append(line)
        lower = t.max_cv
    return handles


def _draw_tiered(ax: Axes, rows: list[FleetPoint], fontsize: float) -> list[Line2D]:
    """Each tiered model's CV as a dot coloured by its tier, its 95 % interval as a bar from
    low to high as given (not clipped to the dot: an interval is drawn as it was computed)."""
    handles: dict[int, Line2D] = {}
    counts = Counter(p.tier_number for p in rows if p.state is PointState.TIERED)
    for y, p in enumerate(rows):
        if p.state is not PointState.TIERED or p.cv is None or p.tier_number is None:
            continue
        colour = tier_colour(p.tier_number)
        if _has_interval(p) and p.cv_low is not None and p.cv_high is not None:
            ax.hlines(y, p.cv_low, p.cv_high, color=colour, lw=1.6, zorder=3)
            ax.plot([p.cv_low, p.cv_high], [y, y], "|", color=colour, ms=7, zorder=3)
        (dot,) = ax.plot(
            p.cv,
            y,
            "o",
            color=colour,
            mec="black",
            mew=0.5,
            ms=6,
            zorder=4,
            label=f"{p.tier_label or f'Tier {p.tier_number}'} ({counts[p.tier_number]})",
        )
        handles.setdefault(p.tier_number, dot)
        if len(rows) <= MAX_VALUE_LABELS:
            right = p.cv_high if _has_interval(p) and p.cv_high is not None else p.cv
            ax.annotate(
                f"{p.cv:.4f}",
                (max(right, p.cv), y),
                xytext=(5, 0),
                textcoords="offset points",
                va="center",
                fontsize=fontsize * 0.9,
                color="#424242",
            )
    return [handles[k] for k in sorted(handles)]


def _draw_not_tiered(ax: Axes, rows: list[FleetPoint], fontsize: float) -> list[Patch]:
    """Refused and running models: a grey hatched row with their state written in it, and a
    refused model's measured CV (if any) as a hollow grey square; never a tier colour."""
    left = blended_transform_factory(ax.transAxes, ax.transData)
    seen: dict[PointState, Patch] = {}
    for y, p in enumerate(rows):
        if p.state is PointState.TIERED:
            continue
        ax.axhspan(
            y - 0.45,
            y + 0.45,
            facecolor="none",
            edgecolor=NOT_TIERED_HATCH,
            hatch="////",
            lw=0,
            zorder=0.5,
        )
        ax.text(
            0.005,
            y,
            p.state.value,
            transform=left,
            va="center",
            fontsize=fontsize,
            style="italic",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0},
            color="#616161",
            zorder=5,
        )
        cv = _finite(p.cv)
        if cv is not None:
            ax.plot(cv, y, "s", mfc="white", mec=NOT_TIERED_COLOUR, mew=1.2, ms=6, zorder=4)
        seen.setdefault(
            p.state,
            Patch(
                facecolor="white",
                edgecolor=NOT_TIERED_COLOUR,
                hatch="////",
                label=f"{p.state.value}: no tier"
                + (" (grey square: CV measured)" if p.state is PointState.REFUSED else ""),
            ),
        )
    return [
        seen[s]
        for s in (PointState.REFUSED, PointState.FAILED, PointState.NOT_PRICED, PointState.RUNNING)
        if s in seen
    ]


def _row_labels(ax: Axes, rows: list[FleetPoint], fontsize: float) -> None:
    labels = [
        _short(p.model) + ("" if p.state is not PointState.TIERED or _has_interval(p) else " †")
        for p in rows
    ]
    ax.set_yticks(range(len(rows)), labels, fontsize=fontsize)
    for tick, p in zip(ax.get_yticklabels(), rows, strict=True):
        if p.state is not PointState.TIERED:
            tick.set_color("#757575")
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top


def _footnotes(rows: list[FleetPoint]) -> list[str]:
    notes: list[str] = []
    if any(p.state is PointState.TIERED and not _has_interval(p) for p in rows):
        notes.append("† no 95 % interval was given for this CV: it is shown alone, without a bar.")
    states = Counter(p.state for p in rows if p.state is not PointState.TIERED)
    if states:
        what = ", ".join(f"{n} {s.value}" for s, n in sorted(states.items()))
        notes.append(
            f"Grey hatched rows hold no tier ({what}): a refused, failed or running model is not "
            "priced, whatever its CV."
        )
    notes.append("Bars: 95 % interval of the CV. Dashed lines: the policy's CV limits per tier.")
    return notes


def _summary(rows: list[FleetPoint]) -> str:
    tiers = Counter(p.tier_number for p in rows if p.state is PointState.TIERED)
    parts = [f"{n} in tier {t}" for t, n in sorted((t, n) for t, n in tiers.items() if t)]
    states = Counter(p.state for p in rows if p.state is not PointState.TIERED)
    parts += [f"{n} {s.value}" for s, n in sorted(states.items())]
    return f"{len(rows)} model{'s' if len(rows) != 1 else ''}: " + ", ".join(parts)


#: The x axis of the fleet figure for the default tier metric.
CV_AXIS_1S = "power CV (tier metric: CV of 1 s window mean power, dimensionless)"


def fleet_cv_png(
    points: Sequence[FleetPoint],
    thresholds: Sequence[CvThreshold],
    path: Path,
    *,
    title: str,
    xlabel: str = CV_AXIS_1S,
) -> Path:
    """Draw the fleet's tier metric per model to `path` (PNG) and return the path.

    One row per model (tiered by CV, lowest on top, then refused, then running): the CV as a
    dot in its tier's colour with its 95 % interval as a bar (none, and a † note, when either
    end is missing), against the policy's CV limits as dashed lines labelled with the tier.
    Refused and running models are drawn grey and hatched, never as tiered. The width is
    fixed and the height grows with the number of models up to a cap
    (`fleet_figure_size_px`). Raises `PlotError` when there is no model or no finite CV.
    """
    _check_points(points)
    rows = _order(points)
    w_in, h_in = _fleet_size_in(len(rows))
    fig = _new_figure((w_in, h_in))
    fig.subplots_adjust(
        left=FLEET_LEFT_IN / w_in,
        right=1.0 - FLEET_RIGHT_IN / w_in,
        top=1.0 - FLEET_TOP_IN / h_in,
        bottom=FLEET_BOTTOM_IN / h_in,
    )
    ax = fig.add_subplot()
    row_px = (h_in - FLEET_TOP_IN - FLEET_BOTTOM_IN) * DPI / len(rows)
    fontsize = min(max(row_px * 0.5, 3.5), 9.0)
    handles: list[Line2D | Patch] = [*_draw_thresholds(ax, thresholds)]
    handles += _draw_tiered(ax, rows, fontsize)
    handles += _draw_not_tiered(ax, rows, fontsize)
    _row_labels(ax, rows, fontsize)
    ax.set_xlim(0.0, _x_max(rows, thresholds))
    ax.set_xlabel(xlabel)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5)
    fig.suptitle(title, fontsize=13, y=1.0 - 0.25 / h_in, va="top")
    fig.text(0.5, 1.0 - 0.58 / h_in, _summary(rows), ha="center", fontsize=9, color="#424242")
    for i, note in enumerate(_footnotes(rows)):
        fig.text(0.01, (0.62 - 0.2 * i) / h_in, note, fontsize=8, color="#424242")
    return _save(fig, path)
