"""`modelgrid verdict`: the operator's verdict, offline, from a benchmark result. Does file I/O.

    modelgrid verdict --result out/result.json [--policy policy.yaml] [--claims claims.yaml]
                      [--qualification qualification.yaml] [--json]

It runs the same validation and tiering code as the operator and prints the model card's
"Firmus Verification Results" section (or JSON). Without `--policy` the shipped default
(the model card's table) applies; without `--qualification` the checks that need one (GPU
product and count, workload digest) are skipped and say so. Exit codes: 0 a verdict, 2 bad
input, 3 the result was refused (the reason is printed).

A result with a concurrency sweep adds a "Concurrency sweep" section (see `render`, which
builds what this prints).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelgrid_contract.reasons import Reason
from modelgrid_contract.result import SCHEMA_FULL, BenchmarkResult
from modelgrid_contract.wire import ResultRejected, encode_compact
from modelgrid_operator.api import QualificationSpec, validation_message
from modelgrid_operator.policy import TierPolicySpec
from modelgrid_operator.render import render_markdown, render_sweep, verdict_json
from modelgrid_operator.verdict import evaluate, validate_result, workload_digest

EXIT_OK, EXIT_BAD_INPUT, EXIT_REFUSED = 0, 2, 3


class BadInput(Exception):
    pass


def _read(path: Path) -> str:
    """A file's text; one line of error for a missing, unreadable or non-UTF-8 file."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path} is not UTF-8 text (byte {exc.start})") from exc


def _load(path: Path) -> Any:
    text = _read(path)
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise BadInput(
            f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from exc
    except RecursionError as exc:
        raise BadInput(f"{path} is nested too deeply to be a document of ours") from exc


def shipped_policy(name: str = "model-card") -> TierPolicySpec:
    text = resources.files("modelgrid_operator") / "data" / "tierpolicies" / f"{name}.yaml"
    return TierPolicySpec.model_validate(yaml.safe_load(text.read_text())["spec"])


def _compact_text(path: Path) -> tuple[str, BenchmarkResult | None]:
    """A compact result as-is, or the compact form of a full result.json and the full result
    itself (whose per-run sweep table the compact form does not carry)."""
    raw = _read(path)
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return raw, None  # let validation refuse it with its reason
    if isinstance(obj, dict) and obj.get("schema") == SCHEMA_FULL:
        try:
            full = BenchmarkResult.model_validate(obj)
        except ValidationError as exc:
            raise BadInput(f"{path} is not a valid full result: {validation_message(exc)}") from exc
        return encode_compact(full), full
    return raw, None


def _spec(args: argparse.Namespace, result_text: str) -> tuple[QualificationSpec, bool]:
    if args.qualification:
        doc = _load(args.qualification)
        spec_doc = doc.get("spec", doc) if isinstance(doc, dict) else None
        if not isinstance(spec_doc, dict):
            raise BadInput(f"{args.qualification} holds no ModelQualification spec")
        check = True
    else:
        try:
            obj = json.loads(result_text)
            name = str(obj.get("model") or "model")
        except (json.JSONDecodeError, AttributeError, RecursionError):
            name = "model"
        spec_doc = {
            "model": {"name": name, "source": {"randomWeights": {"architecture": "tiny-llama"}}}
        }
        check = False
    if args.claims:
        claims = _load(args.claims)
        if isinstance(claims, dict) and isinstance(claims.get("spec"), dict):
            # A ModelQualification: its workload, when it declares one, must be the result's.
            if "workload" in claims["spec"] and not args.qualification:
                spec_doc = {**spec_doc, "workload": claims["spec"]["workload"]}
                args.check_workload = True
            claims = claims["spec"].get("claims", {})
        if not isinstance(claims, dict):
            raise BadInput(f"{args.claims} holds no claims mapping")
        spec_doc = {**spec_doc, "claims": claims}
    try:
        return QualificationSpec.model_validate(spec_doc), check
    except ValidationError as exc:
        raise BadInput(f"invalid qualification or claims: {validation_message(exc)}") from exc


def _policy(args: argparse.Namespace) -> tuple[str, TierPolicySpec]:
    if not args.policy:
        return "model-card (shipped default)", shipped_policy()
    doc = _load(args.policy)
    spec = doc.get("spec", doc) if isinstance(doc, dict) else None
    try:
        name = (doc.get("metadata") or {}).get("name", str(args.policy))
        return str(name), TierPolicySpec.model_validate(spec)
    except ValidationError as exc:
        raise BadInput(
            f"{args.policy} is not a valid TierPolicy: {validation_message(exc)}"
        ) from exc
    except AttributeError as exc:
        raise BadInput(f"{args.policy} is not a valid TierPolicy: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="modelgrid", description="modelgrid command line")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verdict", help="the operator's verdict on a benchmark result, offline")
    v.add_argument(
        "--result",
        type=Path,
        required=True,
        help="result-compact.json, result.json, or a termination message",
    )
    v.add_argument("--policy", type=Path, help="a TierPolicy YAML (default: the model card's)")
    v.add_argument("--claims", type=Path, help="claims YAML/JSON (or a ModelQualification)")
    v.add_argument("--qualification", type=Path, help="the ModelQualification YAML")
    v.add_argument(
        "--job-nonce",
        help="refuse the result unless it echoes this Job nonce (the Job's annotation "
        "modelgrid.firmus.ai/job-nonce), as the operator does",
    )
    v.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = p.parse_args(argv)
    try:
        text, full = _compact_text(args.result)
        spec, check = _spec(args, text)
        policy_name, policy = _policy(args)
        result = validate_result(
            text,
            spec,
            policy,
            check_identity=check,
            expected_nonce=args.job_nonce,
            check_nonce=args.job_nonce is not None,
        )
        if getattr(args, "check_workload", False) and (
            result.workload_digest != workload_digest(spec)
        ):
            raise ResultRejected(
                Reason.WORKLOAD_MISMATCH,
                f"the result is for workload {result.workload_digest}, not the claims' "
                f"{workload_digest(spec)}",
            )
        verdict = evaluate(result, spec, policy)
    except BadInput as exc:
        print(f"modelgrid: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ResultRejected as exc:
        print(f"modelgrid: result refused: {exc.reason}: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    if args.json:
        print(json.dumps(verdict_json(result, verdict, policy_name, full), indent=1))
    else:
        sys.stdout.write(render_markdown(result, verdict, policy_name, check))
        sweep = render_sweep(result, full)
        if sweep:
            sys.stdout.write("\n" + sweep)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
