"""`modelgrid` and `kubectl modelgrid`: the program's command line. Does file and network I/O.

    modelgrid report [-A | -n NS] [-l SELECTOR] [--evidence-root DIR] [--format markdown|json]
                     [--output DIR]                       the fleet report, from the cluster
    modelgrid report --from RESULT_OR_DIR ... [--policy P.yaml] [...]     ... or from files
    modelgrid verdict NAME [-n NS]                        a qualification's verification section
    modelgrid verdict --result result.json [...]          the operator's verdict, offline
    modelgrid trace NAME [-n NS] --evidence-root DIR -o trace.png      its power trace (PNG)
    modelgrid trace --evidence DIR -o trace.png
    modelgrid card import|verify MODEL_CARD.md ...        the model card round trip

`kubectl modelgrid ...` (the `kubectl-modelgrid` plugin) is the same with kubectl's conventions:
`-n`, `-A`, `-l`, `--kubeconfig`, `--context`, and `-o` for the output format (`-o json`); the
output folder is `--output-dir` there. Exit codes: 0 done, 2 bad input or an unreachable or
refusing API server (one line on stderr, never a traceback), 3 a refused result (offline
verdict).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from modelgrid_operator import cli as verdict_cli
from modelgrid_operator.cli import BadInput
from modelgrid_operator.kube import Kube
from modelgrid_operator.kubeclient import ApiError, KubeconfigError, api_call, client_for
from modelgrid_report import card

if TYPE_CHECKING:
    from modelgrid_bench.records import Evidence
    from modelgrid_contract.result import BenchmarkResult
    from modelgrid_report.fleet import Entry
    from modelgrid_report.plots import PointState
    from modelgrid_report.sources import Loaded, OnTrace

# The report's numeric stack (numpy, matplotlib, the benchmark's evidence reader) is imported
# where a report or a plot is made, so `modelgrid verdict` and `modelgrid card` also work where
# only the operator's extra is installed (the operator image).

EXIT_OK, EXIT_BAD_INPUT = 0, 2
FLEET_PNG = "fleet-cv.png"
TRACES_DIR = "traces"


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (and exit 2), like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {' '.join(message.split())}\n")


class Style:
    """How the options are spelled: `modelgrid`'s or kubectl's (`-o` is the format there)."""

    def __init__(self, prog: str, kubectl: bool) -> None:
        self.prog = prog
        self.kubectl = kubectl


# --------------------------------------------------------------------------- arguments


def _kubeconfig_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", help="the kubeconfig (default: $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--context", help="the kubeconfig context (default: the current one)")


def _cluster_options(p: argparse.ArgumentParser, *, many: bool) -> None:
    _kubeconfig_options(p)
    p.add_argument("-n", "--namespace", help="the namespace (default: the context's)")
    if many:
        p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
        p.add_argument("-l", "--selector", default="", help="a label selector, e.g. team=a")


def _report_parser(sub: Any, style: Style) -> None:
    r = sub.add_parser(
        "report",
        help="the fleet tiering report (seed 000) and the per-run analysis (seed 002)",
        description="The fleet tiering report and the per-run granular analysis, from the live "
        "cluster or from result files and evidence folders; with an output folder, the PNGs too.",
    )
    _cluster_options(r, many=True)
    r.add_argument(
        "--from",
        dest="files",
        type=Path,
        nargs="+",
        metavar="RESULT_OR_DIR",
        help="result files (result.json, result-compact.json) or evidence folders, instead of "
        "the cluster",
    )
    r.add_argument(
        "--policy", type=Path, help="with --from: the TierPolicy YAML (default: model-card)"
    )
    r.add_argument(
        "--evidence-root",
        type=Path,
        help="where the evidence claim is mounted or copied: status.evidence.path is under it",
    )
    fmt = ("-o", "--output") if style.kubectl else ("--format",)
    r.add_argument(*fmt, dest="format", choices=("markdown", "json"), default="markdown")
    out = ("--output-dir",) if style.kubectl else ("--output", "--output-dir")
    r.add_argument(
        *out, dest="output_dir", type=Path, help="write report.md (or .json) and the PNGs here"
    )


def _verdict_parser(sub: Any) -> None:
    v = sub.add_parser(
        "verdict",
        help="a qualification's verification (or, with --result, the offline verdict)",
        add_help=False,
    )
    v.add_argument("rest", nargs=argparse.REMAINDER)


def _trace_parser(sub: Any, style: Style) -> None:
    t = sub.add_parser("trace", help="one qualification's power trace as a PNG")
    t.add_argument("name", nargs="?", help="the ModelQualification (with --evidence-root)")
    _cluster_options(t, many=False)
    t.add_argument("--evidence-root", type=Path, help="where the evidence claim is mounted")
    t.add_argument("--evidence", type=Path, help="an evidence folder, instead of NAME")
    out = ("--png",) if style.kubectl else ("-o", "--output", "--png")
    t.add_argument(*out, dest="png", type=Path, required=True, help="the PNG to write")


def parser(style: Style) -> argparse.ArgumentParser:
    """The whole command line."""
    p = _Parser(prog=style.prog, description="modelgrid: reports, verdicts, cards")
    sub = p.add_subparsers(dest="command", required=True)
    _report_parser(sub, style)
    _verdict_parser(sub)
    _trace_parser(sub, style)
    card.add_parser(sub, _kubeconfig_options)  # verify --from mq/NAME reads the cluster
    return p


# --------------------------------------------------------------------------- the cluster


def _kube(args: argparse.Namespace) -> tuple[Kube, str]:
    api, namespace = client_for(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    return Kube(api), namespace


def _getter(args: argparse.Namespace) -> Callable[[str | None, str], Mapping[str, Any] | None]:
    """`card verify --from mq/NAME`'s reader: the qualification from the cluster."""

    def get(namespace: str | None, name: str) -> Mapping[str, Any] | None:
        kube, default_ns = _kube(args)
        with api_call(f"reading ModelQualification {name}"):
            return kube.get_qualification(namespace or default_ns, name)

    return get


def _qualification(args: argparse.Namespace) -> tuple[Kube, dict[str, Any]]:
    kube, default_ns = _kube(args)
    namespace = args.namespace or default_ns
    with api_call(f"reading ModelQualification {namespace}/{args.name}"):
        obj = kube.get_qualification(namespace, args.name)
    if obj is None:
        raise BadInput(f"ModelQualification {args.name!r} not found in namespace {namespace!r}")
    return kube, obj


# --------------------------------------------------------------------------- report


def _load(args: argparse.Namespace, on_trace: OnTrace | None = None) -> Loaded:
    from modelgrid_report.sources import attach_evidence, cluster_entries, file_entries

    if args.files:
        return file_entries(args.files, args.policy, on_trace)
    kube, default_ns = _kube(args)
    namespace = None if args.all_namespaces else (args.namespace or default_ns)
    loaded = cluster_entries(kube, namespace, args.selector)
    attach_evidence(loaded, args.evidence_root, on_trace)
    return loaded


def _point_state(e: Entry) -> PointState:
    from modelgrid_report.fleet import EntryState
    from modelgrid_report.plots import PointState

    return {
        EntryState.TIERED: PointState.TIERED,
        EntryState.REFUSED: PointState.REFUSED,
        EntryState.FAILED: PointState.FAILED,
        EntryState.NOT_PRICED: PointState.NOT_PRICED,
    }.get(e.state, PointState.RUNNING)


def _fleet_png(loaded: Loaded, out: Path, policy: str | None) -> str:
    """The fleet's CV per model against `policy`'s limits: the entries it priced and every
    entry that holds no tier (`policy` None: the only policy, fleet-cv.png)."""
    from modelgrid_report.fleet import ordered
    from modelgrid_report.plots import CV_AXIS_1S, CvThreshold, FleetPoint, fleet_cv_png

    names = sorted(loaded.policies)
    name = policy or (names[0] if names else "")
    points = [
        FleetPoint(
            model=e.label if e.namespace == "" else f"{e.label} ({e.key})",
            cv=e.power_cv,
            cv_low=e.power_cv_low,
            cv_high=e.power_cv_high,
            tier_number=e.tier_number,
            tier_label=e.tier_label,
            state=_point_state(e),
        )
        for e in ordered(loaded.entries)
        if not e.tiered or e.policy == name or not name
    ]
    view = loaded.policies.get(name)
    thresholds = [
        CvThreshold(
            tier_number=t.tier_number, label=t.label, max_cv=t.max_cv, inclusive=t.cv_inclusive
        )
        for t in (view.tiers if view is not None else [])
        if t.max_cv is not None
    ]
    file = FLEET_PNG if policy is None else f"fleet-cv-{policy}.png"
    title = f"Power CV per model against TierPolicy {name}'s limits" if name else "Power CV"
    instant = view is not None and view.tier_metric == "power_cv_instant"
    xlabel = (
        "power CV (tier metric: CV of instant power reads, dimensionless; no interval)"
        if instant
        else CV_AXIS_1S
    )
    fleet_cv_png(points, thresholds, out / file, title=title, xlabel=xlabel)
    return file


def _trace_name(key: str) -> str:
    return key.replace("/", "_") + ".png"


class _TracePlots:
    """Draws each verified evidence folder's trace as the report loads it (so no trace is
    held in memory beyond its own plot), and remembers what it wrote."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.written: list[str] = []
        self.notes: list[str] = []

    def __call__(self, entry: Entry, ev: Evidence, full: BenchmarkResult) -> None:
        from modelgrid_report.plots import PlotError, power_trace_png

        rel = f"{TRACES_DIR}/{_trace_name(entry.key)}"
        try:
            power_trace_png(
                ev, full, self.out / rel, title=f"{entry.label} ({entry.key}): power trace"
            )
        except PlotError as exc:
            self.notes.append(f"{entry.key}: no trace plot: {exc}")
            return
        self.written.append(rel)


def _plots(loaded: Loaded, out: Path, traces: _TracePlots) -> list[str]:
    from modelgrid_report.plots import PlotError

    written = []
    # One figure per policy: tiers and limits are a policy's own, and lines of two policies in
    # one figure would let a model's dot be read against the wrong limits.
    many = len(loaded.policies) > 1
    for policy in sorted(loaded.policies) if many else [None]:
        try:
            written.append(_fleet_png(loaded, out, policy))
        except PlotError as exc:
            loaded.notes.append(f"no fleet plot{f' for {policy}' if policy else ''}: {exc}")
    loaded.notes.extend(traces.notes)
    return written + sorted(traces.written)


def _markdown(loaded: Loaded, artifacts: Sequence[str], now: dt.datetime) -> str:
    from modelgrid_report import granular, tiering

    report = tiering.tiering(loaded.entries, loaded.policies, generated_at=now, artifacts=artifacts)
    text = (
        tiering.tiering_markdown(report) + "\n---\n\n" + granular.analysis_markdown(loaded.entries)
    )
    if loaded.notes:
        text += "\n## Notes\n\n" + "".join(f"- {n}\n" for n in loaded.notes)
    return text


def _json(loaded: Loaded, artifacts: Sequence[str], now: dt.datetime) -> str:
    from modelgrid_report import granular, tiering
    from modelgrid_report.fleet import ordered

    report = tiering.tiering(loaded.entries, loaded.policies, generated_at=now, artifacts=artifacts)
    doc = {
        "tiering": report.model_dump(mode="json"),
        "analysis": granular.analysis_json(loaded.entries),
        "entries": [e.model_dump(mode="json", exclude={"sweep"}) for e in ordered(loaded.entries)],
        "notes": loaded.notes,
    }
    return json.dumps(doc, indent=1) + "\n"


def _write(path: Path, text: str) -> None:
    """Atomically, so a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_report(args: argparse.Namespace) -> int:
    """`report`: the markdown (or JSON) on stdout, or the files and PNGs in the output folder."""
    now = dt.datetime.now(dt.UTC)
    render = _json if args.format == "json" else _markdown
    if args.output_dir is None:
        sys.stdout.write(render(_load(args), [], now))
        return EXIT_OK
    out: Path = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    traces = _TracePlots(out)
    loaded = _load(args, traces)
    artifacts = _plots(loaded, out, traces)
    name = "report.json" if args.format == "json" else "report.md"
    _write(out / name, render(loaded, artifacts, now))
    print(f"wrote {out / name} and {len(artifacts)} PNG(s) in {out}")
    return EXIT_OK


# --------------------------------------------------------------------------- verdict, trace


def run_verdict(rest: list[str], style: Style) -> int:
    """`verdict --result ...` is the offline verdict; `verdict NAME` reads the cluster."""
    if (
        not rest
        or any(a == "--result" or a.startswith("--result=") for a in rest)
        or rest[0]
        in (
            "-h",
            "--help",
        )
    ):
        return verdict_cli.main(["verdict", *rest])
    p = _Parser(prog=f"{style.prog} verdict")
    p.add_argument("name")
    _cluster_options(p, many=False)
    args = p.parse_args(rest)
    _, obj = _qualification(args)
    sys.stdout.write(card.render_verification(card.facts_from_status(obj)))
    return EXIT_OK


def run_trace(args: argparse.Namespace) -> int:
    """`trace`: one power trace PNG, from an evidence folder (checked against its own
    result.json) or a qualification's kept one (checked against the priced status.result)."""
    from modelgrid_contract.wire import encode_compact
    from modelgrid_report.fleet import entry_from_status
    from modelgrid_report.plots import PlotError, power_trace_png
    from modelgrid_report.sources import evidence_for, read_full, verified_evidence

    if args.evidence is not None:
        folder: Path = args.evidence
        priced, title = encode_compact(read_full(folder)), f"{folder.name}: power trace"
    else:
        if not args.name or args.evidence_root is None:
            raise BadInput("give NAME with --evidence-root, or --evidence DIR")
        _, obj = _qualification(args)
        entry = entry_from_status(obj)
        if not entry.tiered:
            raise BadInput(
                f"{entry.key} holds no price ({entry.state.value}): there is no priced result "
                "to check its evidence against; draw a folder with --evidence DIR"
            )
        found, why = evidence_for(entry, args.evidence_root)
        if found is None:
            raise BadInput(why)
        folder, priced = found, entry.result
        title = f"{entry.label} ({entry.key}): power trace"
    checked = verified_evidence(folder, priced)
    if isinstance(checked, str):
        raise BadInput(checked)
    try:
        power_trace_png(checked[0], checked[1], args.png, title=title)
    except PlotError as exc:
        raise BadInput(str(exc)) from exc
    print(f"wrote {args.png}")
    return EXIT_OK


# --------------------------------------------------------------------------- main


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def dispatch(argv: Sequence[str], style: Style) -> int:
    """Parse `argv` and run its subcommand; bad input is one line and exit 2."""
    args_list = list(argv)
    if args_list[:1] == ["verdict"]:
        try:
            return run_verdict(args_list[1:], style)
        except (BadInput, ApiError, KubeconfigError) as exc:
            print(f"{style.prog}: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        args = parser(style).parse_args(args_list)
    except SystemExit as exc:  # --help, or a usage error already printed on one line
        return int(exc.code or 0)
    try:
        if args.command == "report":
            return run_report(args)
        if args.command == "trace":
            return run_trace(args)
        return card.run(args, _getter(args))
    except (BadInput, ApiError, KubeconfigError) as exc:
        print(f"{style.prog}: error: {_one_line(exc)}", file=sys.stderr)
    except OSError as exc:  # an unwritable --output, a file where a folder is expected
        where = f" {exc.filename}" if exc.filename else ""
        print(
            f"{style.prog}: error: cannot write or read{where}: {exc.strerror or exc}",
            file=sys.stderr,
        )
    except ImportError as exc:  # the operator image has no numeric stack
        print(
            f"{style.prog}: error: {args.command} needs the report extra "
            f"(pip install 'modelgrid[report]'): {exc.name or exc}",
            file=sys.stderr,
        )
    return EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    """`modelgrid`."""
    return dispatch(sys.argv[1:] if argv is None else argv, Style("modelgrid", kubectl=False))


if __name__ == "__main__":
    raise SystemExit(main())
