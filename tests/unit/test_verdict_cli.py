"""`modelgrid verdict` offline, on a real (simulated) benchmark run, and the drift of its data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from modelgrid_operator.cli import main, shipped_policy
from tests.factory import JOB_NONCE, run_simulated_benchmark

REPO = Path(__file__).resolve().parents[2]
#: The module's fixture runs a paced benchmark of two 12 s runs (longer on a slow machine).
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_simulated_benchmark(tmp_path_factory.mktemp("bench") / "ev", job_nonce=JOB_NONCE)


def test_shipped_policies_are_the_crds_copies() -> None:
    for name in ("model-card", "cv-only"):
        packaged = (
            REPO / "operator" / "modelgrid_operator" / "data" / "tierpolicies" / f"{name}.yaml"
        )
        source = REPO / "crds" / "tierpolicies" / f"{name}.yaml"
        assert packaged.read_text() == source.read_text(), (
            f"{packaged} drifted from {source}: cp {source} {packaged}"
        )
    assert shipped_policy().tiers[0].discount_percent == 20


def test_verdict_refuses_a_simulated_result_under_the_default_policy(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verdict", "--result", str(run_dir / "result.json")]) == 3
    assert "SimulatedResult" in capsys.readouterr().err


def test_verdict_prints_the_model_cards_results_section(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load((REPO / "crds" / "tierpolicies" / "model-card.yaml").read_text())
    doc["spec"]["allowSimulated"] = True
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc))
    claims = tmp_path / "claims.json"
    claims.write_text(json.dumps({"avgPowerW": 100.0, "powerCV": 0.2}))
    assert (
        main(
            [
                "verdict",
                "--result",
                str(run_dir / "result-compact.json"),
                "--policy",
                str(policy),
                "--claims",
                str(claims),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "## Firmus Verification Results" in out
    assert "| Metric | Developer Claim | Firmus Measured | Delta | Status |" in out
    # ~130 W measured against a 100 W claim: outside the 10 % tolerance.
    assert "| Avg Power (W) | 100 |" in out
    assert "✗" in out
    assert "**Discount Approved:** No" in out
    assert (
        main(
            ["verdict", "--result", str(run_dir / "result.json"), "--policy", str(policy), "--json"]
        )
        == 0
    )
    obj = json.loads(capsys.readouterr().out)
    # ~130 W and a steady replay (CV about 0.03): the card's Tier 1, unless the interval of
    # this short run (11 windows a run, whichever part of the trace the run met) reaches 0.10,
    # when the borderline rule gives Tier 2. Which one is the run's own figures' to say.
    compact = json.loads((run_dir / "result-compact.json").read_text())
    assert compact["avg_power_watts"] < 150
    assert compact["power_cv"] < 0.10
    assert obj["tier_number"] == (1 if compact["power_cv_ci95"][1] < 0.10 else 2)
    assert obj["simulated"] is True
    assert set(obj) >= {
        "tier",
        "discount_percentage",
        "power_cv",
        "avg_power_watts",
        "peak_power_watts",
        "qualified",
    }


def test_verdict_checks_identity_when_given_the_qualification(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mq = yaml.safe_load((REPO / "examples" / "qualification.yaml").read_text())
    q = tmp_path / "mq.yaml"
    q.write_text(yaml.safe_dump(mq))
    doc = yaml.safe_load((REPO / "crds" / "tierpolicies" / "model-card.yaml").read_text())
    doc["spec"]["allowSimulated"] = True
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc))
    # The example declares a different workload than this run: the digests disagree.
    assert (
        main(
            [
                "verdict",
                "--result",
                str(run_dir / "result.json"),
                "--policy",
                str(policy),
                "--qualification",
                str(q),
            ]
        )
        == 3
    )
    assert "WorkloadMismatch" in capsys.readouterr().err


def test_verdict_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verdict", "--result", str(tmp_path / "missing.json")]) == 2
    bad = tmp_path / "r.json"
    bad.write_text("{not json")
    assert main(["verdict", "--result", str(bad)]) == 3
    assert "MalformedResult" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("result.json", b"\xff\xfe\x00not utf-8", "is not UTF-8"),
        ("missing.json", None, "cannot read"),
    ],
)
def test_unreadable_results_give_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes | None,
    needle: str,
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert main(["verdict", "--result", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert "Traceback" not in err


def test_an_invalid_policy_gives_one_line_and_exit_2(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("spec:\n  tiers: []\n  disqualifyingFlags: [contention]\n")
    assert main(["verdict", "--result", str(run_dir / "result.json"), "--policy", str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "is not a valid TierPolicy" in err


def test_claims_from_a_qualification_with_another_workload_are_refused(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "mq.yaml"
    other.write_text(
        yaml.safe_dump({"spec": {"claims": {"avgPowerW": 130}, "workload": {"samples": 999}}})
    )
    sandbox = REPO / "hack" / "sandbox" / "model-card-sandbox.yaml"  # accepts simulated results
    args = ["--result", str(run_dir / "result.json"), "--policy", str(sandbox)]
    code = main(["verdict", *args, "--claims", str(other)])
    assert code == 3
    assert "WorkloadMismatch" in capsys.readouterr().err


def test_a_deeply_nested_file_gives_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = tmp_path / "policy.yaml"
    deep.write_text("[" * 5000 + "]" * 5000)
    result = tmp_path / "r.json"
    result.write_text("[" * 2000 + "]" * 2000)
    assert main(["verdict", "--result", str(result)]) == 3  # a result: refused as malformed
    assert "MalformedResult" in capsys.readouterr().err
    assert main(["verdict", "--result", str(result), "--policy", str(deep)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err


def test_the_benchmark_echoes_its_job_nonce_and_verdict_checks_it(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compact = json.loads((run_dir / "result-compact.json").read_text())
    assert compact["job_nonce"] == JOB_NONCE
    full = json.loads((run_dir / "result.json").read_text())
    assert full["job_nonce"] == JOB_NONCE
    doc = yaml.safe_load((REPO / "crds" / "tierpolicies" / "model-card.yaml").read_text())
    doc["spec"]["allowSimulated"] = True
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc))
    result = str(run_dir / "result-compact.json")
    args = ["verdict", "--result", result, "--policy", str(policy), "--json"]
    assert main([*args, "--job-nonce", JOB_NONCE]) == 0
    capsys.readouterr()
    assert main([*args, "--job-nonce", "ab" * 16]) == 3
    err = capsys.readouterr().err
    assert err.startswith("modelgrid: result refused: ResultNotBound: ")
    assert len(err.strip().splitlines()) == 1


def test_an_invalid_policy_file_is_one_line_in_a_persons_words(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"spec": {"tiers": [], "maxReruns": 9}}))
    result = str(run_dir / "result-compact.json")
    assert main(["verdict", "--result", result, "--policy", str(policy)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "is not a valid TierPolicy: tiers: " in err
    assert "maxReruns: Input should be less than or equal to 5" in err
    assert "errors.pydantic.dev" not in err
    assert "For further information" not in err
