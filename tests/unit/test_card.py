"""The model card round trip (seed 001): import a card, fill in its verification results.

The cards are tests/data/cards/template.md (the seed, byte for byte) and filled.md (the same
card filled in). Statuses are the operator's own: a benchmark result from tests.factory, priced
by `reconcile.decide` as the operator does; verdicts come from `verdict.evaluate`.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelgrid_contract.workload import PromptType
from modelgrid_operator.api import QualificationSpec
from modelgrid_operator.jobs import JobSettings
from modelgrid_operator.outcome import Observed
from modelgrid_operator.policy import TierPolicySpec
from modelgrid_operator.reconcile import decide
from modelgrid_operator.verdict import evaluate, validate_result
from modelgrid_report import card as mc
from tests import factory as f

REPO = Path(__file__).resolve().parents[2]
CARDS = REPO / "tests" / "data" / "cards"
TEMPLATE = CARDS / "template.md"
FILLED = CARDS / "filled.md"
#: sha256 of /work/shared/seeds/001_9f173c0391bbf0ca.txt, the template as published
SEED_SHA256 = "f3a39fc58662e30612c30924263bc00297ab5c9094a4b914e275f41e62539a8b"

# Lines of the template (and of filled.md, which only changes values).
MODEL_NAME_LINE = 11
AVG_POWER_LINE = 24
PEAK_POWER_LINE = 27
CV_LINE = 30
TIER_LINE = 44
INPUT_TOKENS_LINE = 81
OUTPUT_TOKENS_LINE = 82
SECTION_LINE = 163

CARD_SOURCE = {"randomWeights": {"architecture": "llama-3.1-8b"}}
NAME, NS, UID = "llama-8b-card", "team-a", "7d1e0c2a-3f2d-4c8e-9a61-0d2f4b7e9c13"
T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
DONE = T0 + dt.timedelta(minutes=12)


# --------------------------------------------------------------------------- builders


def filled() -> str:
    return FILLED.read_text(encoding="utf-8")


def line_of(text: str, prefix: str) -> int:
    """The 1-based line of the first line of `text` starting with `prefix`."""
    for number, line in enumerate(text.split("\n"), start=1):
        if line.startswith(prefix):
            return number
    raise AssertionError(f"no line starts with {prefix!r}")


def with_value(text: str, label: str, value: str) -> str:
    """`text` with the value of `**label:**` replaced (same line, line end kept)."""
    pattern = re.compile(rf"^\*\*{re.escape(label)}:\*\* `[^`]*`", re.MULTILINE)
    new, count = pattern.subn(lambda _: f"**{label}:** `{value}`", text, count=1)
    assert count == 1, label
    return new


def replace_line(text: str, number: int, new: str) -> str:
    lines = text.split("\n")
    lines[number - 1] = new
    return "\n".join(lines)


def problems_of(text: str) -> list[mc.CardProblem]:
    with pytest.raises(mc.CardError) as err:
        mc.parse_card(text)
    return err.value.problems


def model_card_policy(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelgrid.firmus.ai/v1alpha1",
        "kind": "TierPolicy",
        "metadata": {"name": "model-card", "generation": 1},
        "spec": f.shipped_policy_spec(**spec),
    }


@functools.cache
def priced_result() -> str:
    """A real result that every check passes (around 100 W, CV well below 0.10), echoing the
    Job nonce the operator draws in these tests."""
    return json.dumps(f.priced_compact(job_nonce=f.JOB_NONCE))


def card_spec(*, workload: bool = False) -> dict[str, Any]:
    """The spec the filled card imports to. Without its workload the spec asks for the
    benchmark's default one, which the priced result ran."""
    spec = mc.card_to_qualification(mc.parse_card(filled()), source=CARD_SOURCE)["spec"]
    if not workload:
        del spec["workload"]
    return copy.deepcopy(spec)


def _observe(spec: dict[str, Any], policy: dict[str, Any], **kw: Any) -> Observed:
    fields: dict[str, Any] = {
        "name": NAME,
        "namespace": NS,
        "uid": UID,
        "generation": 1,
        "spec": spec,
        "status": {},
        "policy_name": "model-card",
        "policy": policy,
        "job": None,
        "pods": [],
        "stale_jobs": [],
        "active_benchmarks": 0,
        "max_concurrent": 4,
        "now": T0,
        "nonce": f.JOB_NONCE,
    }
    return Observed(**{**fields, **kw})


def _completed_job(manifest: dict[str, Any]) -> dict[str, Any]:
    job = copy.deepcopy(manifest)
    job["metadata"]["uid"] = "job-uid-1"
    job["status"] = {
        "conditions": [
            {"type": "Complete", "status": "True", "reason": "CompletionsReached"},
        ]
    }
    return job


def _succeeded_pod(job_name: str, message: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{job_name}-x7k2q", "creationTimestamp": "2026-03-01T12:00:05Z"},
        "spec": {"nodeName": "gpu-h200-0"},
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "benchmark", "state": {"terminated": {"exitCode": 0, "message": message}}}
            ],
        },
    }


def operator_cr(
    spec: dict[str, Any], raw: str | None = None, policy: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ModelQualification after the operator created its Job, the Job completed with
    `raw` and the operator decided again (its status as reconcile writes it)."""
    policy = policy or model_card_policy()
    first = decide(_observe(spec, policy), JobSettings())
    assert first.job is not None
    status = dict(first.status)
    pod = _succeeded_pod(first.job["metadata"]["name"], raw or priced_result())
    then = _observe(
        spec, policy, status=status, job=_completed_job(first.job), pods=[pod], now=DONE
    )
    status.update(decide(then, JobSettings()).status)
    return {
        "apiVersion": "modelgrid.firmus.ai/v1alpha1",
        "kind": "ModelQualification",
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1},
        "spec": spec,
        "status": status,
    }


def table(section: str) -> dict[str, list[str]]:
    """The Verified Metrics table: metric label -> its other cells, backticks removed."""
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith(("| Metric", "|--")):
            cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def field_value(section: str, label: str) -> str:
    m = re.search(rf"^\*\*{re.escape(label)}:\*\* (.*?)\s*$", section, re.MULTILINE)
    assert m, label
    return m.group(1)


def fake_cluster(*crs: dict[str, Any]) -> tuple[mc.QualificationGetter, list[tuple[Any, str]]]:
    calls: list[tuple[Any, str]] = []
    by_key = {(cr["metadata"]["namespace"], cr["metadata"]["name"]): cr for cr in crs}

    def get(namespace: str | None, name: str) -> dict[str, Any] | None:
        calls.append((namespace, name))
        return by_key.get((namespace or "default", name))

    return get, calls


# --------------------------------------------------------------------------- the template


def test_the_template_is_the_seed_byte_for_byte() -> None:
    assert hashlib.sha256(TEMPLATE.read_bytes()).hexdigest() == SEED_SHA256


def test_the_unfilled_template_is_refused_with_every_required_field_at_its_line() -> None:
    problems = problems_of(TEMPLATE.read_text(encoding="utf-8"))
    where = {(p.line, p.field, p.kind) for p in problems}
    placeholder = mc.ProblemKind.PLACEHOLDER
    assert where == {
        (MODEL_NAME_LINE, "Model Name", placeholder),
        (AVG_POWER_LINE, "Average Power Consumption", placeholder),
        (CV_LINE, "Power Coefficient of Variation (CV)", placeholder),
        (TIER_LINE, "Target Tier", placeholder),
        (INPUT_TOKENS_LINE, "Average Input Tokens", placeholder),
        (OUTPUT_TOKENS_LINE, "Average Output Tokens", placeholder),
    }
    first = problems[0]
    assert str(first) == (
        f"line {MODEL_NAME_LINE}: Model Name is still the template's placeholder "
        '"[e.g., my-custom-llama-70b]": fill it in'
    )


def test_importing_the_template_writes_nothing_and_prints_each_problem_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mq.yaml"
    rc = mc.main(
        ["card", "import", str(TEMPLATE), "--random-weights", "tiny-llama", "-o", str(out)]
    )
    assert rc == 2
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind either
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 6
    assert all(re.fullmatch(rf"{re.escape(str(TEMPLATE))}:\d+: .+", line) for line in lines)
    assert lines[0].startswith(f"{TEMPLATE}:{MODEL_NAME_LINE}: Model Name is still")
    assert lines[1].startswith(f"{TEMPLATE}:{AVG_POWER_LINE}: Average Power Consumption is")


# --------------------------------------------------------------------------- importing


def test_the_filled_card_reads_every_value() -> None:
    card = mc.parse_card(filled())
    assert (card.model_name, card.model_version, card.parameter_count) == (
        "my-custom-llama-8b",
        "v1.2.0",
        "8B",
    )
    assert (card.avg_power_w, card.peak_power_w, card.power_cv) == (142.3, 165.8, 0.085)
    assert (card.joules_per_token, card.tokens_per_joule, card.target_tier) == (0.52, 1.92, 1)
    assert card.hardware == mc.CardHardware(
        description="H200 141GB HBM3e", gpu_product="NVIDIA-H200"
    )
    assert (card.samples, card.batch_size, card.sequence_length_tokens) == (20, 4, 2048)
    assert card.prompt_type is PromptType.CONVERSATIONAL
    assert (card.temperature, card.top_p) == (0.7, 0.9)
    assert card.date_tested == dt.date(2025, 12, 13)
    assert card.signed_date == dt.date(2025, 12, 14)
    assert card.declarations == dict.fromkeys(mc.Declaration, True)
    assert card.lines[mc.CardField.MODEL_NAME] == MODEL_NAME_LINE
    assert card.lines[mc.CardField.AVG_POWER] == AVG_POWER_LINE


def test_the_filled_card_imports_to_a_valid_qualification_with_the_cards_values() -> None:
    manifest = mc.card_to_qualification(
        mc.parse_card(filled()), name=None, namespace="team-a", source=CARD_SOURCE
    )
    assert manifest["apiVersion"] == "modelgrid.firmus.ai/v1alpha1"
    assert manifest["kind"] == "ModelQualification"
    assert manifest["metadata"]["name"] == "my-custom-llama-8b"
    assert manifest["metadata"]["namespace"] == "team-a"
    assert manifest["metadata"]["labels"] == {
        "modelgrid.firmus.ai/target-tier": "1",
        "modelgrid.firmus.ai/model-version": "v1.2.0",
    }
    spec = QualificationSpec.model_validate(manifest["spec"])
    assert manifest["spec"]["claims"] == {
        "avgPowerW": 142.3,
        "peakPowerW": 165.8,
        "powerCV": 0.085,
        "joulesPerToken": 0.52,
        "tokensPerJoule": 1.92,
        "targetTier": 1,
    }
    assert manifest["spec"]["workload"] == {
        "samples": 20,
        "tokensPerSample": 128,
        "batchSize": 4,
        "inputTokens": 256,
        "temperature": 0.7,
        "topP": 0.9,
        "promptType": "conversational",
    }
    assert manifest["spec"]["attestation"] == {
        "organization": "Example AI",
        "contact": "energy@example.ai",
        "dateTested": "2025-12-13",
        "accountId": "acct-12345",
        "signature": "Jane Developer",
        "signedDate": "2025-12-14",
        "declarations": {d.value: True for d in mc.Declaration},
    }
    assert spec.attestation is not None
    assert spec.attestation.declarations.all_checked
    assert spec.hardware.gpu_product == "NVIDIA-H200"
    assert spec.model.source.random_weights is not None
    assert spec.model.parameter_count == "8B"


def test_the_cli_writes_yaml_that_reads_back_as_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mq.yaml"
    args = ["card", "import", str(FILLED), "--cache", "hf-cache:meta-llama/Llama-3.1-8B-Instruct"]
    assert mc.main([*args, "--name", "llama-8b", "-n", "team-a", "-o", str(out)]) == 0
    doc = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert doc["metadata"]["name"] == "llama-8b"
    assert doc["spec"]["model"]["source"] == {
        "cache": {"claimName": "hf-cache", "modelId": "meta-llama/Llama-3.1-8B-Instruct"}
    }
    expected = mc.card_to_qualification(
        mc.parse_card(filled()),
        name="llama-8b",
        namespace="team-a",
        source=doc["spec"]["model"]["source"],
    )
    assert doc == expected
    assert doc["spec"]["attestation"]["dateTested"] == "2025-12-13"  # a string, not a date
    capsys.readouterr()
    assert mc.main([*args[:3], "--pvc", "models:/llama-8b"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["spec"]["model"]["source"] == {
        "pvc": {"claimName": "models", "path": "/llama-8b"}
    }
    assert "namespace" not in printed["metadata"]


def test_optional_placeholders_are_left_out_and_ignored_sections_are_not_read() -> None:
    text = with_value(filled(), "Peak Power Consumption", "[Watts]")
    text = with_value(text, "Top-p", "[value]")
    text = with_value(text, "Hardware", "[e.g., H200 80GB HBM3]")
    # the template's Verification Results and Power Stability Analysis keep placeholders;
    # an unknown label there is not the importer's business
    text = text.replace("**Power Range:**", "**Power Rnage:**")
    spec = mc.card_to_qualification(mc.parse_card(text), source=CARD_SOURCE)["spec"]
    assert "peakPowerW" not in spec["claims"]
    assert "topP" not in spec["workload"]
    assert "hardware" not in spec
    QualificationSpec.model_validate(spec)


def test_the_target_tier_is_the_specs_claim_and_unticked_declarations_are_false() -> None:
    text = with_value(filled(), "Target Tier", "tier-2")
    line = line_of(text, "- [x] No artificial workload")
    text = replace_line(text, line, text.split("\n")[line - 1].replace("[x]", "[ ]"))
    spec = mc.card_to_qualification(mc.parse_card(text), source=CARD_SOURCE)["spec"]
    assert spec["claims"]["targetTier"] == 2
    for written in ("2", "Tier 2 - Medium Variance", "TIER 2 (Moderate)"):
        assert mc.parse_card(with_value(filled(), "Target Tier", written)).target_tier == 2
    assert spec["attestation"]["declarations"]["noManipulation"] is False
    assert not QualificationSpec.model_validate(spec).attestation.declarations.all_checked  # type: ignore[union-attr]


def test_a_crlf_card_reads_the_same_with_the_same_lines() -> None:
    crlf = filled().replace("\n", "\r\n")
    assert mc.parse_card(crlf) == mc.parse_card(filled())
    problems = problems_of(TEMPLATE.read_text(encoding="utf-8").replace("\n", "\r\n"))
    assert [p.line for p in problems][:2] == [MODEL_NAME_LINE, AVG_POWER_LINE]


MUTATIONS = [
    pytest.param("Average Power Consumption", "-5", "greater than 0", id="negative-power"),
    pytest.param("Average Power Consumption", "0", "greater than 0", id="zero-power"),
    pytest.param("Average Power Consumption", "about 140", "must be a number", id="words"),
    pytest.param("Average Power Consumption", "12000 W", "at most 10000", id="too-much-power"),
    pytest.param("Power Coefficient of Variation (CV)", "1.5", "at most 1", id="cv-above-1"),
    pytest.param("Power Coefficient of Variation (CV)", "-0.1", "at least 0", id="cv-below-0"),
    pytest.param("Peak Power Consumption", "120", "below the Average", id="peak-below-avg"),
    pytest.param("Tokens per Joule", "5", "inverse", id="efficiency-contradiction"),
    pytest.param("Target Tier", "Tier 11", "tier from 1 to 10", id="tier-out-of-range"),
    pytest.param("Target Tier", "gold", "tier from 1 to 10", id="tier-words"),
    pytest.param("Target Tier", "1.5", "tier from 1 to 10", id="tier-fraction"),
    pytest.param("Target Tier", "Tier 1 / Tier 2", "tier from 1 to 10", id="tier-undecided"),
    pytest.param("Parameter Count", "8 billion", "K, M, B or T", id="parameter-count"),
    pytest.param("Contact Email", "energy-team", "email address", id="bad-email"),
    pytest.param("Date Tested", "2025-13-40", "YYYY-MM-DD", id="bad-date"),
    pytest.param("Date", "2025-12-01", "before the Date Tested", id="signed-before-tested"),
    pytest.param("Temperature", "3", "at most 2", id="temperature"),
    pytest.param("Top-p", "0", "greater than 0", id="top-p-zero"),
    pytest.param("Top-p", "1.5", "at most 1", id="top-p-above-1"),
    pytest.param("Average Output Tokens", "0", "at least 1", id="no-output-tokens"),
    pytest.param("Average Input Tokens", "12.5", "whole number", id="fractional-tokens"),
    pytest.param("Number of Samples", "-3", "at least 1", id="negative-samples"),
    pytest.param("Batch Size", "32", "exceeds the Number of Samples", id="batch-over-samples"),
    pytest.param("Sequence Length", "100", "shorter than the Average Input", id="short-sequence"),
    pytest.param("Hardware", "A100 40GB", "H200", id="unknown-gpu"),
    pytest.param("Hardware", "16x H200", "1 to 8", id="too-many-gpus"),
    pytest.param("Prompt Type", "poetry", "conversational", id="prompt-type"),
    pytest.param("CUDA Version", "twelve", "version number", id="cuda-version"),
    pytest.param("Model Name", "llama\u202eevil", "bidirectional", id="bidi-override"),
    pytest.param("Model Name", "", "is empty", id="empty-required"),
    pytest.param("Model Name", "[your model]", "placeholder", id="placeholder-required"),
]


@pytest.mark.parametrize(("label", "value", "says"), MUTATIONS)
def test_an_impossible_value_is_a_problem_at_its_line(label: str, value: str, says: str) -> None:
    text = with_value(filled(), label, value)
    problems = problems_of(text)
    assert len(problems) == 1, problems
    (problem,) = problems
    assert problem.line == line_of(text, f"**{label}:**")
    assert problem.field == label
    assert says in problem.message
    assert "\n" not in problem.message


def test_an_unknown_field_in_a_section_read_is_a_problem_with_a_suggestion() -> None:
    text = filled().replace("**Model Version:**", "**Model Verison:**")
    (problem,) = problems_of(text)
    assert (problem.line, problem.kind) == (12, mc.ProblemKind.UNKNOWN_FIELD)
    assert "did you mean Model Version?" in problem.message
    text = filled().replace(
        "**Hardware:**", "**GPU Clock:** `1980 MHz`  \n**Hardware:**"
    )  # a new line 63
    (problem,) = problems_of(text)
    assert (problem.line, problem.field) == (63, "GPU Clock")
    assert "Testing Methodology" in problem.message


def test_a_duplicated_field_and_an_unknown_declaration_are_problems_at_their_lines() -> None:
    text = filled().replace(
        "**Target Tier:** `Tier 1`", "**Target Tier:** `Tier 1`  \n**Target Tier:** `Tier 2`"
    )
    (problem,) = problems_of(text)
    assert (problem.line, problem.kind) == (TIER_LINE + 1, mc.ProblemKind.DUPLICATE)
    assert f"first on line {TIER_LINE}" in problem.message
    line = line_of(filled(), "- [x] Reported metrics")
    text = replace_line(filled(), line, "- [x] The model is carbon neutral")
    (problem,) = problems_of(text)
    assert (problem.line, problem.field) == (line, "Declaration")


def test_every_problem_is_reported_at_once() -> None:
    text = with_value(filled(), "Average Power Consumption", "-1")
    text = with_value(text, "Top-p", "2")
    text = with_value(text, "Model Name", "[e.g., x]")
    lines = [p.line for p in problems_of(text)]
    assert lines == [MODEL_NAME_LINE, AVG_POWER_LINE, line_of(text, "**Top-p:**")]


def test_a_missing_required_field_points_at_its_section() -> None:
    lines = filled().split("\n")
    del lines[AVG_POWER_LINE - 1]
    (problem,) = problems_of("\n".join(lines))
    assert problem.kind is mc.ProblemKind.MISSING
    assert problem.line == 20  # ## Energy Efficiency Declaration
    assert "Average Power Consumption is missing" in problem.message


def test_a_value_the_spec_refuses_is_a_problem_at_the_cards_line_not_a_traceback() -> None:
    card = mc.parse_card(filled())
    bad = card.model_copy(update={"top_p": 0.0, "temperature": 5.0})
    with pytest.raises(mc.CardError) as err:
        mc.card_to_qualification(bad, source=CARD_SOURCE)
    assert {(p.line, p.field, p.kind) for p in err.value.problems} == {
        (83, "Temperature", mc.ProblemKind.REFUSED_BY_SPEC),
        (84, "Top-p", mc.ProblemKind.REFUSED_BY_SPEC),
    }
    assert all("workload." in p.message for p in err.value.problems)
    # a CRD rule pydantic does not check, on a card built by hand
    swapped = card.model_copy(update={"peak_power_w": 100.0})
    with pytest.raises(mc.CardError) as err:
        mc.card_to_qualification(swapped, source=CARD_SOURCE)
    assert [p.line for p in err.value.problems] == [PEAK_POWER_LINE]


def test_the_name_is_a_dns_label_made_from_the_model_name() -> None:
    text = with_value(filled(), "Model Name", "Meta-Llama/Llama-3.1-8B_Instruct (FP8)")
    manifest = mc.card_to_qualification(mc.parse_card(text), source=CARD_SOURCE)
    assert manifest["metadata"]["name"] == "meta-llama-llama-3-1-8b-instruct-fp8"
    assert manifest["spec"]["model"]["name"] == "Meta-Llama/Llama-3.1-8B_Instruct (FP8)"
    long = mc.dns_label("x" * 80 + "-y")
    assert len(long) == 63
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", long)
    assert mc.dns_label("???") == "model"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--pvc", "Models"], "claimName"),
        (["--pvc", "models:relative/path"], "absolute path"),
        (["--cache", "hf-cache"], "CLAIM:MODEL_ID"),
        (["--cache", "hf-cache:../../etc"], "Hugging Face repo id"),
        (["--random-weights", "tiny-llama", "--name", "Bad_Name"], "lowercase"),
        (["--random-weights", "tiny-llama", "-n", "Team A"], "namespace"),
    ],
)
def test_bad_import_arguments_are_one_line_of_bad_input(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mc.main(["card", "import", str(FILLED), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert says in captured.err


def test_an_output_file_that_cannot_be_written_is_one_line_of_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "no-such-dir" / "mq.yaml"
    argv = ["card", "import", str(FILLED), "--random-weights", "tiny-llama", "-o", str(out)]
    assert mc.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "cannot write" in err
    assert not out.parent.exists()


def test_unreadable_cards_are_one_line_of_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    latin1 = tmp_path / "card.md"
    latin1.write_bytes(filled().encode("utf-8").replace(b"Example AI", b"Ex\xe4mple AI"))
    for path in (tmp_path / "missing.md", latin1, tmp_path):
        assert mc.main(["card", "import", str(path), "--random-weights", "tiny-llama"]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1
        assert "Traceback" not in err
    assert mc.main(["card", "verify", str(latin1), "--from", "mq/x"]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_random_weights_architectures_are_the_crds() -> None:
    crd = yaml.safe_load(
        (REPO / "crds" / "modelgrid.firmus.ai_modelqualifications.yaml").read_text()
    )
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    random = spec["properties"]["model"]["properties"]["source"]["properties"]["randomWeights"]
    assert tuple(random["properties"]["architecture"]["enum"]) == mc.RANDOM_WEIGHTS_ARCHITECTURES


# --------------------------------------------------------------------------- rendering, filling


def facts(**kw: Any) -> mc.VerificationFacts:
    fields: dict[str, Any] = {
        "verified": True,
        "origin": "ModelQualification team-a/x",
        "status": "Verified",
        "verification_date": dt.date(2026, 3, 1),
        "verified_by": "modelgrid operator (TierPolicy model-card)",
        "method": "modelgrid benchmark",
        "samples_tested": "`100` output tokens",
        "rows": (
            mc.MetricRow(metric=mc.Metric.AVG_POWER_W, claimed=142.3, measured=100.0),
            mc.MetricRow(metric=mc.Metric.POWER_CV, claimed=0.085, measured=0.03),
        ),
        "tier_label": "Tier 1 - Low Variance",
        "discount_approved": True,
        "discount_percent": 20.0,
        "reasoning": "fine",
    }
    return mc.VerificationFacts(**{**fields, **kw})


def test_filling_changes_only_the_section_and_twice_is_once() -> None:
    card = filled()
    section = mc.render_verification(facts())
    once = mc.fill_verification(card, section)
    assert mc.fill_verification(once, section) == once
    lines = card.split("\n")
    start = SECTION_LINE - 1
    end = next(i for i in range(start + 1, len(lines)) if lines[i] == "---")
    prefix, suffix = "\n".join(lines[:start]) + "\n", "\n".join(lines[end:])
    assert once.startswith(prefix)
    assert once.endswith(suffix)
    assert once[len(prefix) : len(once) - len(suffix)] == section + "\n"
    assert "[Firmus Engineer]" not in once
    assert "**Final Qualification:** `Tier 1 - Low Variance`" in once
    again = mc.fill_verification(once, mc.render_verification(facts(tier_label="Tier 2")))
    assert again.startswith(prefix)
    assert again.endswith(suffix)
    assert "`Tier 2`" in again


def test_filling_a_crlf_card_keeps_its_line_ends() -> None:
    card = filled().replace("\n", "\r\n")
    out = mc.fill_verification(card, mc.render_verification(facts()))
    assert "\n" not in out.replace("\r\n", "")
    assert mc.fill_verification(out, mc.render_verification(facts())) == out
    assert out.replace("\r\n", "\n") == mc.fill_verification(
        filled(), mc.render_verification(facts())
    )


def test_a_section_at_the_end_of_the_card_is_filled_too() -> None:
    card = filled()
    head = card[: card.index(mc.SECTION_HEADING)]
    tail_card = head + mc.SECTION_HEADING + "\n\n**Verification Date:** `[YYYY-MM-DD]`"
    out = mc.fill_verification(tail_card, mc.render_verification(facts()))
    assert out.startswith(head)
    assert mc.fill_verification(out, mc.render_verification(facts())) == out


def test_a_card_without_the_section_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = filled().replace(mc.SECTION_HEADING, "## Verification")
    with pytest.raises(mc.CardSectionError, match="no"):
        mc.fill_verification(card, mc.render_verification(facts()))
    path = tmp_path / "card.md"
    path.write_text(card, encoding="utf-8")
    cr = operator_cr(card_spec())
    get, _ = fake_cluster(cr)
    assert mc.main(["card", "verify", str(path), "--from", f"mq/{NAME}", "-n", NS], get) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "Firmus Verification Results" in err
    assert path.read_text(encoding="utf-8") == card


def test_facts_that_are_not_a_verdict_cannot_carry_a_tier() -> None:
    with pytest.raises(ValueError, match="no tier"):
        facts(verified=False, status="Failed")
    section = mc.render_verification(
        facts(verified=False, status="Failed", tier_label=None, discount_approved=False)
    )
    assert field_value(section, "Final Qualification") == "`none`"
    assert field_value(section, "Discount Approved") == "`No`"


def test_peak_power_and_tokens_per_joule_rows_only_when_claimed() -> None:
    rows = table(mc.render_verification(facts()))
    assert list(rows) == ["Avg Power (W)", "CV", "J/token"]
    assert rows["J/token"] == ["—", "—", "—", "—"]
    claimed = facts(
        rows=(
            mc.MetricRow(metric=mc.Metric.PEAK_POWER_W, claimed=165.8, measured=171.2),
            mc.MetricRow(metric=mc.Metric.TOKENS_PER_JOULE, measured=2.0),
        )
    )
    assert list(table(mc.render_verification(claimed))) == [
        "Avg Power (W)",
        "CV",
        "J/token",
        "Peak Power (W)",
    ]


# --------------------------------------------------------------------------- from the operator


def test_a_succeeded_qualification_renders_its_status_values() -> None:
    cr = operator_cr(card_spec())
    status = cr["status"]
    assert status["phase"] == "Succeeded"
    assert status["tier"]["number"] == 1
    section = mc.render_verification(mc.facts_from_status(cr))
    rows = table(section)
    claims = {c["metric"]: c for c in status["verification"]["claims"]}
    labels = {
        "avgPowerW": "Avg Power (W)",
        "powerCV": "CV",
        "joulesPerToken": "J/token",
        "peakPowerW": "Peak Power (W)",
        "tokensPerJoule": "Tokens/J",
    }
    assert set(rows) == set(labels.values())
    for metric, label in labels.items():
        claimed, measured, delta, mark = rows[label]
        check = claims[metric]
        assert float(claimed) == check["claimed"]
        assert float(measured) == pytest.approx(check["measured"], rel=1e-6)
        assert float(measured) == pytest.approx(status["measured"][metric], rel=1e-6)
        assert float(delta.rstrip("%")) == pytest.approx(check["deltaPercent"], abs=0.005)
        assert mark == ("✓" if check["withinTolerance"] else "✗")
    assert field_value(section, "Final Qualification") == f"`{status['tier']['label']}`"
    claims_word = "Failed" if status["verification"]["result"] == "Failed" else "Verified"
    assert field_value(section, "Verification Status").startswith(f"`{claims_word}` (")
    approved = "`Yes` (20%)" if status["discountApproved"] else "`No`"
    assert field_value(section, "Discount Approved") == approved
    assert field_value(section, "Verification Date") == f"`{DONE.date().isoformat()}`"
    assert status["completedAt"].startswith(DONE.date().isoformat())
    assert field_value(section, "Reasoning") == " ".join(status["reasoning"].split())
    assert "TierPolicy model-card" in field_value(section, "Verified By")
    tokens = status["measured"]["outputTokens"]
    assert field_value(section, "Samples Tested").startswith(f"`{tokens}` output tokens")


def test_a_refused_qualification_renders_as_not_verified_with_its_reason() -> None:
    cr = operator_cr(card_spec(workload=True))  # the result ran another workload
    status = cr["status"]
    assert status["phase"] == "Failed"
    section = mc.render_verification(mc.facts_from_status(cr))
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert "WorkloadMismatch" in stalled["message"]
    assert stalled["reason"] in field_value(section, "Verification Status")
    assert "WorkloadMismatch" in field_value(section, "Reasoning")
    assert field_value(section, "Final Qualification") == "`none`"
    assert field_value(section, "Discount Approved") == "`No`"
    assert field_value(section, "Samples Tested") == "`none`"
    # the claims still show, with nothing measured against them
    assert table(section)["Avg Power (W)"] == ["142.3", "—", "—", "—"]


def test_a_failed_qualification_with_a_stale_tier_renders_no_tier() -> None:
    cr = operator_cr(card_spec())
    assert cr["status"]["phase"] == "Succeeded"
    # The policy now demands more GPU utilisation than the run had: the operator re-prices
    # the stored result and fails it; its merge patch leaves the old tier in place.
    stricter = model_card_policy(workDone={"minGpuUtilPercent": 100})
    stricter["metadata"]["generation"] = 2
    d = decide(
        _observe(cr["spec"], stricter, status=cr["status"], now=DONE + dt.timedelta(days=1)),
        JobSettings(),
    )
    cr["status"] = {**cr["status"], **d.status}
    assert cr["status"]["phase"] == "Failed"
    assert cr["status"]["tier"]["label"] == "Tier 1 - Low Variance"
    section = mc.render_verification(mc.facts_from_status(cr))
    assert "Tier 1" not in section
    assert "20%" not in section
    assert field_value(section, "Final Qualification") == "`none`"
    assert field_value(section, "Discount Approved") == "`No`"
    assert "`Not verified`" in field_value(section, "Verification Status")


@pytest.mark.parametrize("phase", ["Pending", "Running", None])
def test_a_qualification_in_progress_is_not_verified(phase: str | None) -> None:
    status: dict[str, Any] = {}
    if phase is not None:
        status = {
            "phase": phase,
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "BenchmarkRunning", "message": "m"}
            ],
        }
    cr = {"metadata": {"name": "x", "namespace": "a"}, "spec": card_spec(), "status": status}
    got = mc.facts_from_status(cr)
    assert not got.verified
    assert got.tier_label is None
    section = mc.render_verification(got)
    assert field_value(section, "Verification Date") == "`not verified`"
    assert field_value(section, "Final Qualification") == "`none`"
    reason = "BenchmarkRunning" if phase else "Pending"
    assert field_value(section, "Verification Status").startswith("`Pending` (")
    assert reason in field_value(section, "Verification Status")


# --------------------------------------------------------------------------- from a verdict


def test_facts_from_a_verdict_are_the_verdicts_figures() -> None:
    spec = QualificationSpec.model_validate(card_spec())
    policy = TierPolicySpec.model_validate(f.shipped_policy_spec())
    result = validate_result(priced_result(), spec, policy, check_identity=False)
    verdict = evaluate(result, spec, policy)
    got = mc.facts_from_verdict(
        result, verdict, "model-card", verification_date=dt.date(2026, 2, 2), identity_checked=False
    )
    assert got.verified
    assert got.tier_label == "Tier 1 - Low Variance"
    assert got.discount_approved == verdict.discount_approved
    section = mc.render_verification(got)
    rows = table(section)
    assert float(rows["Avg Power (W)"][1]) == pytest.approx(result.avg_power_watts, rel=1e-6)
    assert float(rows["CV"][1]) == pytest.approx(verdict.cv, rel=1e-6)
    assert float(rows["Avg Power (W)"][0]) == 142.3
    assert field_value(section, "Verification Date") == "`2026-02-02`"
    assert mc.IDENTITY_NOTE in section


# --------------------------------------------------------------------------- card verify


def write_card(tmp_path: Path, text: str | None = None, mode: int = 0o640) -> Path:
    path = tmp_path / "MODEL_CARD.md"
    path.write_bytes((text if text is not None else filled()).encode("utf-8"))
    path.chmod(mode)
    return path


def test_verify_from_a_qualification_fills_the_card_in_place_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_card(tmp_path)
    cr = operator_cr(card_spec())
    get, calls = fake_cluster(cr)
    argv = ["card", "verify", str(path), "--from", f"mq/{NAME}", "-n", NS]
    assert mc.main(argv, get) == 0
    assert calls == [(NS, NAME)]
    out = capsys.readouterr().out
    assert "filled" in out
    assert "Tier 1 - Low Variance" in out
    first = path.read_bytes()
    assert first == mc.fill_verification(
        filled(), mc.render_verification(mc.facts_from_status(cr))
    ).encode("utf-8")
    assert path.stat().st_mode & 0o777 == 0o640
    assert mc.main(argv, get) == 0
    assert "unchanged" in capsys.readouterr().out
    assert path.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MODEL_CARD.md"]


def test_verify_keeps_a_crlf_cards_bytes_outside_the_section(tmp_path: Path) -> None:
    original = filled().replace("\n", "\r\n")
    path = write_card(tmp_path, original)
    get, _ = fake_cluster(operator_cr(card_spec()))
    assert mc.main(["card", "verify", str(path), "--from", f"mq/{NAME}", "-n", NS], get) == 0
    data = path.read_bytes().decode("utf-8")
    start = original.index(mc.SECTION_HEADING)
    end = original.index("\r\n---\r\n", start) + 2
    assert data.startswith(original[:start])
    assert data.endswith(original[end:])
    assert "\n" not in data.replace("\r\n", "")


def test_verify_from_a_missing_qualification_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_card(tmp_path)
    get, calls = fake_cluster()
    assert mc.main(["card", "verify", str(path), "--from", "mq/nope"], get) == 2
    assert calls == [(None, "nope")]
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "ModelQualification nope not found" in err
    assert path.read_bytes() == filled().encode("utf-8")

    def broken(namespace: str | None, name: str) -> dict[str, Any] | None:
        raise ConnectionError("connection refused")

    assert mc.main(["card", "verify", str(path), "--from", "mq/x"], broken) == 2
    assert "connection refused" in capsys.readouterr().err
    assert mc.main(["card", "verify", str(path), "--from", "mq/Bad_Name"], get) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_verify_from_a_result_file_dates_it_by_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_card(tmp_path)
    result = tmp_path / "result-compact.json"
    result.write_text(priced_result(), encoding="utf-8")
    written = dt.datetime(2026, 2, 3, 10, 0, tzinfo=dt.UTC).timestamp()
    os.utime(result, (written, written))
    argv = ["card", "verify", str(path), "--result", str(result)]
    assert mc.main(argv) == 0
    section = path.read_text(encoding="utf-8")
    assert field_value(section, "Verification Date").startswith("`2026-02-03` (")
    assert field_value(section, "Final Qualification") == "`Tier 1 - Low Variance`"
    assert mc.IDENTITY_NOTE in section
    first = path.read_bytes()
    assert mc.main(argv) == 0
    assert path.read_bytes() == first
    assert "unchanged" in capsys.readouterr().out.splitlines()[-1]
    # with the qualification that ran, its identity is checked and the note goes
    qualification = tmp_path / "q.yaml"
    manifest = {"apiVersion": "modelgrid.firmus.ai/v1alpha1", "spec": card_spec()}
    qualification.write_text(yaml.safe_dump(manifest), encoding="utf-8")
    assert mc.main([*argv, "--qualification", str(qualification)]) == 0
    assert mc.IDENTITY_NOTE not in path.read_text(encoding="utf-8")


def test_verify_from_a_refused_result_fills_not_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_card(tmp_path)
    result = tmp_path / "result.json"
    result.write_text(json.dumps(f.priced_compact(flags=["short_window"])), encoding="utf-8")
    assert mc.main(["card", "verify", str(path), "--result", str(result)]) == 0
    assert "not verified (DisqualifyingFlag)" in capsys.readouterr().out
    section = path.read_text(encoding="utf-8")
    assert "DisqualifyingFlag" in field_value(section, "Verification Status")
    assert field_value(section, "Final Qualification") == "`none`"
    assert field_value(section, "Discount Approved") == "`No`"


@pytest.mark.parametrize(
    ("content", "extra", "says"),
    [
        ("not json at all", [], "not a benchmark result"),
        ('{"schema": "other/v9"}', [], "not a benchmark result"),
        (None, ["--policy", "policy.yaml"], "not a valid TierPolicy"),
        (None, ["-n", "team-a"], "goes with --from"),
    ],
)
def test_verify_from_a_bad_result_is_bad_input_and_leaves_the_card(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    extra: list[str],
    says: str,
) -> None:
    path = write_card(tmp_path)
    result = tmp_path / "result.json"
    result.write_text(content if content is not None else priced_result(), encoding="utf-8")
    (tmp_path / "policy.yaml").write_text("spec: {tiers: []}\n", encoding="utf-8")
    extra = [str(tmp_path / a) if a.endswith(".yaml") else a for a in extra]
    assert mc.main(["card", "verify", str(path), "--result", str(result), *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert says in err
    assert path.read_bytes() == filled().encode("utf-8")


def test_verify_from_a_result_needs_an_importable_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_card(tmp_path, TEMPLATE.read_text(encoding="utf-8"))
    result = tmp_path / "result.json"
    result.write_text(priced_result(), encoding="utf-8")
    assert mc.main(["card", "verify", str(path), "--result", str(result)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{path}:{MODEL_NAME_LINE}: ")
    assert path.read_bytes() == TEMPLATE.read_bytes()


def test_the_card_command_plugs_into_a_callers_parser(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="modelgrid")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("report")
    card = mc.add_parser(sub)
    assert card.prog == "modelgrid card"
    out = tmp_path / "mq.yaml"
    args = parser.parse_args(
        ["card", "import", str(FILLED), "--random-weights", "llama-3.1-8b", "-o", str(out)]
    )
    assert mc.run(args, None) == 0
    assert yaml.safe_load(out.read_text())["spec"]["model"]["source"] == CARD_SOURCE
    with pytest.raises(SystemExit):
        parser.parse_args(["card", "import", str(FILLED)])  # a source is required
