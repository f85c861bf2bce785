"""Where the reports' entries come from: the live cluster (through the operator's `Kube`),
result files priced offline, and kept evidence folders. Does I/O.

Evidence is used only when it is the evidence of the price it is shown beside: re-analysed with
the benchmark's own code it must give back the priced compact result byte for byte (and its
result.json must say the same), else it is set aside with a note; a report never draws or
tabulates files that were swapped after the price was granted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelgrid_bench.analysis import analyze
from modelgrid_bench.errors import BadInputError
from modelgrid_bench.evidence import read_evidence
from modelgrid_bench.records import Evidence
from modelgrid_contract.result import SCHEMA_FULL, BenchmarkResult
from modelgrid_contract.wire import ResultRejected, encode_compact
from modelgrid_operator.api import QualificationSpec, validation_message
from modelgrid_operator.cli import BadInput, shipped_policy
from modelgrid_operator.kube import Kube
from modelgrid_operator.kubeclient import api_call
from modelgrid_operator.policy import TierPolicySpec
from modelgrid_operator.verdict import evaluate, validate_result
from modelgrid_report.fleet import (
    Entry,
    PolicyView,
    entry_from_status,
    entry_from_verdict,
    entry_refused,
    policy_view,
    with_full_sweep,
)

RESULT_FILE = "result.json"
TRACE_FILE = "trace.csv"


@dataclass
class Loaded:
    """What the report works from: the entries, the policies that priced them, the evidence
    folders that belong to them (by entry key), and notes on what was set aside."""

    entries: list[Entry] = field(default_factory=list)
    policies: dict[str, PolicyView] = field(default_factory=dict)
    evidence: dict[str, Path] = field(default_factory=dict)
    full: dict[str, BenchmarkResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- evidence


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_full(directory: Path) -> BenchmarkResult:
    """The full result.json of an evidence folder (BadInput when it is missing or invalid)."""
    path = directory / RESULT_FILE
    try:
        return BenchmarkResult.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        raise BadInput(f"{path} is not a valid full result: {validation_message(exc)}") from exc


def evidence_for(entry: Entry, root: Path) -> tuple[Path | None, str]:
    """The kept evidence folder of `entry` under `root` (where the evidence claim is mounted
    or copied), if it is there and its trace.csv is the priced one; else None and why."""
    if not entry.evidence_path:
        return None, f"{entry.key}: no kept evidence in status"
    folder = root / entry.evidence_path
    trace = folder / TRACE_FILE
    if not trace.is_file():
        return None, f"{entry.key}: {folder} has no {TRACE_FILE}"
    if entry.trace_sha256 and _sha256(trace) != entry.trace_sha256:
        return None, (
            f"{entry.key}: {trace} is not the priced evidence (its SHA-256 differs from "
            "status.evidence.traceSha256): set aside"
        )
    return folder, ""


def load_trace(folder: Path) -> Evidence:
    """An evidence folder through the benchmark's own reader (sizes and cells checked)."""
    try:
        return read_evidence(folder)
    except BadInputError as exc:
        raise BadInput(str(exc)) from exc


#: What a caller does with evidence once it is verified (draw it): entry, evidence, result.
OnTrace = Callable[[Entry, Evidence, BenchmarkResult], None]


def verified_evidence(folder: Path, priced: str) -> tuple[Evidence, BenchmarkResult] | str:
    """The evidence of `folder` and its full result, if re-analysing the evidence with the
    benchmark's own code gives back `priced` (the compact result that was priced) byte for
    byte, and its result.json says the same; else why not. Nothing unverified is drawn or
    tabulated: a file swapped after the price (trace, telemetry, timeline or result) shows."""
    if not priced:
        return f"{folder}: there is no priced result to check it against"
    try:
        ev = load_trace(folder)
        full = read_full(folder)
    except BadInput as exc:
        return str(exc)
    if encode_compact(full) != priced:
        return f"{folder}/{RESULT_FILE} is not the priced result: set aside"
    if encode_compact(analyze(ev)) != priced:
        return f"{folder}: its evidence does not reproduce the priced result: set aside"
    return ev, full


def attach_evidence(loaded: Loaded, root: Path | None, on_trace: OnTrace | None = None) -> None:
    """Find each tiered entry's kept evidence under `root`, verify it (`verified_evidence`),
    take its full sweep table, and hand it to `on_trace`."""
    if root is None:
        return
    for i, entry in enumerate(loaded.entries):
        if not entry.tiered:
            continue
        folder, why = evidence_for(entry, root)
        checked = verified_evidence(folder, entry.result) if folder is not None else why
        if isinstance(checked, str):
            loaded.notes.append(
                checked if checked.startswith(entry.key) else f"{entry.key}: {checked}"
            )
            continue
        ev, full = checked
        assert folder is not None
        loaded.evidence[entry.key] = folder
        loaded.full[entry.key] = full
        loaded.entries[i] = with_full_sweep(entry, full)
        if on_trace is not None:
            on_trace(loaded.entries[i], ev, full)


# --------------------------------------------------------------------------- the cluster


def _policy_name(obj: Mapping[str, Any]) -> str:
    status = obj.get("status")
    policy = status.get("policy") if isinstance(status, Mapping) else None
    return str(policy.get("name") or "") if isinstance(policy, Mapping) else ""


def cluster_entries(kube: Kube, namespace: str | None, selector: str) -> Loaded:
    """Every qualification in `namespace` (None: all) matching `selector`, and the TierPolicies
    that priced them, read from the cluster (each entry's CV is the one its policy priced)."""
    with api_call("listing ModelQualifications"):
        objs = kube.list_qualifications(namespace, selector)
    loaded = Loaded()
    for name in sorted({n for o in objs if (n := _policy_name(o))}):
        with api_call(f"reading TierPolicy {name}"):
            doc = kube.get_policy(name)
        spec = _policy_spec(doc)
        if spec is None:
            loaded.notes.append(f"TierPolicy {name} is gone or invalid: its tiers are not listed")
            continue
        loaded.policies[name] = policy_view(name, spec)
    for o in objs:
        view = loaded.policies.get(_policy_name(o))
        loaded.entries.append(entry_from_status(o, view.tier_metric if view else None))
    return loaded


def _policy_spec(doc: Any) -> TierPolicySpec | None:
    if not isinstance(doc, Mapping):
        return None
    try:
        return TierPolicySpec.model_validate(doc.get("spec") or {})
    except ValidationError:
        return None


# --------------------------------------------------------------------------- files


def read_policy(path: Path | None) -> tuple[str, TierPolicySpec]:
    """A TierPolicy YAML, or the shipped model-card policy."""
    if path is None:
        return "model-card", shipped_policy()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BadInput(f"cannot read the TierPolicy {path}: {exc}") from exc
    spec = _policy_spec(doc)
    if spec is None:
        raise BadInput(f"{path} is not a valid TierPolicy")
    name = str(((doc or {}).get("metadata") or {}).get("name") or path.stem)
    return name, spec


def _result_text(path: Path) -> tuple[str, BenchmarkResult | None, Path | None]:
    """The compact result of a file or evidence folder, the full result when there is one,
    and the folder when it holds a trace."""
    folder = path if path.is_dir() else None
    source = path / RESULT_FILE if folder is not None else path
    try:
        raw = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {source}: {exc}") from exc
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return raw, None, None  # validation refuses it with its reason
    if isinstance(obj, dict) and obj.get("schema") == SCHEMA_FULL:
        try:
            full = BenchmarkResult.model_validate(obj)
        except ValidationError as exc:
            raise BadInput(
                f"{source} is not a valid full result: {validation_message(exc)}"
            ) from exc
        has_trace = folder is not None and (folder / TRACE_FILE).is_file()
        return encode_compact(full), full, folder if has_trace else None
    return raw, None, None


def _label(path: Path) -> str:
    return path.name if path.is_dir() else f"{path.parent.name}/{path.name}"


def file_entries(
    paths: Sequence[Path], policy_path: Path | None, on_trace: OnTrace | None = None
) -> Loaded:
    """Entries for result files and evidence folders, priced offline by `modelgrid verdict`'s
    code under `policy_path` (or the shipped policy); the GPU product and workload are not
    checked against a qualification (there is none), and the report says so."""
    name, spec = read_policy(policy_path)
    loaded = Loaded(policies={name: policy_view(name, spec)})
    loaded.notes.append(
        "offline entries: no ModelQualification was given, so GPU product, GPU count and "
        "workload digest were not checked against one"
    )
    for path in paths:
        text, full, folder = _result_text(path)
        model = full.backend.model if full is not None else path.stem
        qspec = QualificationSpec.model_validate(
            {"model": {"name": model, "source": {"randomWeights": {"architecture": "tiny-llama"}}}}
        )
        label = _label(path)
        try:
            result = validate_result(text, qspec, spec, check_identity=False)
        except ResultRejected as exc:
            loaded.entries.append(entry_refused(label, model, name, exc.reason, exc.message))
            continue
        checked = verified_evidence(folder, text) if folder is not None else None
        if isinstance(checked, str):
            loaded.entries.append(entry_refused(label, model, name, "EvidenceMismatch", checked))
            continue
        verdict = evaluate(result, qspec, spec)
        entry = entry_from_verdict(label, result, verdict, name, full, spec.tier_metric)
        loaded.entries.append(entry)
        if full is not None:
            loaded.full[entry.key] = full
        if checked is not None and folder is not None:
            loaded.evidence[entry.key] = folder
            if on_trace is not None and entry.tiered:
                on_trace(entry, *checked)
    return loaded
