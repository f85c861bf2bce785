"""`modelgrid verdict` offline, on a real (simulated) benchmark run, and the drift of its data."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from modelgrid_bench.analysis import analyze
from modelgrid_contract.result import BenchmarkResult, Sweep, SweepRun
from modelgrid_contract.wire import encode_compact
from modelgrid_operator.cli import main, shipped_policy
from tests import factory as f
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


# --------------------------------------------------------------------------- concurrency sweep

SANDBOX = REPO / "hack" / "sandbox" / "model-card-sandbox.yaml"
LEVELS = (1, 4, 16)
#: Efficiency of each level's runs: 90 % at 4; run 3 at 16 is contended (0.5 of a 0.75 median
#: is below 85 % of it).
EFF = {1: [1.0, 1.0, 1.0], 4: [0.9, 0.9, 0.9], 16: [0.75, 0.76, 0.5]}
#: Seed 002's per-run table header, verbatim.
SEED_002_HEADER = (
    "| Run | Speedup | Efficiency (%) | Throughput Delta (tok/s) | TTFT Delta (ms) | Contention |\n"
    "|-----|---------|----------------|----------------------|-------------|------------|"
)


def _eff(level: int, run: int) -> float:
    return EFF[level][run]


@pytest.fixture(scope="module")
def sweep_result() -> BenchmarkResult:
    return analyze(f.sweep_evidence(LEVELS, 3, efficiency=_eff))


def _sweep(result: BenchmarkResult) -> Sweep:
    assert result.sweep is not None
    return result.sweep


def _verdict(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["verdict", "--result", str(path), "--policy", str(SANDBOX), *extra]) == 0
    return capsys.readouterr().out


def _section(out: str, heading: str) -> str:
    """The text from `heading` to the next heading of any level (or the end)."""
    after = out.split(heading + "\n", 1)[1]
    return after.split("\n#", 1)[0]


def _rows(table: str) -> list[str]:
    """The body rows of a seed 002 table (those with a speedup)."""
    return [line for line in table.splitlines() if line.startswith("| ") and "x |" in line]


def _seed_row(r: SweepRun) -> str:
    assert r.speedup is not None
    assert r.efficiency_pct is not None
    assert r.throughput_delta_tok_s is not None
    assert r.ttft_delta_ms is not None
    return (
        f"| {r.run} | {r.speedup:.4f}x | {r.efficiency_pct:.2f} | "
        f"{r.throughput_delta_tok_s:+.2f} | {r.ttft_delta_ms:+.1f} | "
        f"{'Yes' if r.contention else 'No'} |"
    )


def test_a_full_results_sweep_prints_seed_002s_tables(
    sweep_result: BenchmarkResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "result.json"
    path.write_text(sweep_result.model_dump_json(by_alias=True))
    out = _verdict(path, capsys)
    assert "## Firmus Verification Results" in out
    sweep = _section(out, "## Concurrency sweep")
    assert "**Levels:** 1, 4, 16; tier decided at concurrency 16 (the highest level)." in sweep
    assert "A run is contended when its efficiency is below 85% of its level's median." in sweep
    assert (
        "| Level | Run | Tokens/s | TTFT p50 (ms) | TTFT p95 (ms) | Avg Power (W) | Power CV "
        "| J/token |"
    ) in sweep
    for r in _sweep(sweep_result).runs:
        assert f"| {r.concurrency} | {r.run} | {r.tokens_per_s:.2f} | " in sweep
    for level in (4, 16):
        table = _section(out, f"### Concurrency {level} vs 1")
        assert SEED_002_HEADER in table
        rows = [r for r in _sweep(sweep_result).runs if r.concurrency == level]
        assert _rows(table) == [_seed_row(r) for r in rows]
        effs = [r.efficiency_pct for r in rows if r.efficiency_pct is not None]
        mean, std = statistics.mean(effs), statistics.stdev(effs)
        assert "**Efficiency Statistics:**" in table
        assert f"- Mean: {mean:.2f}%" in table
        assert f"- Std Dev: {std:.2f}pp" in table
        assert f"- Min: {min(effs):.2f}% | Max: {max(effs):.2f}%" in table
        assert f"- Range: {max(effs) - min(effs):.2f}pp" in table
        assert f"- CV: {std / mean * 100:.2f}%" in table
    assert "### Concurrency 1 vs 1" not in out
    top = _section(out, "### Concurrency 16 vs 1")
    contention = {line.split(" | ")[0]: line.split(" | ")[-1] for line in _rows(top)}
    assert contention == {"| 1": "No |", "| 2": "No |", "| 3": "Yes |"}
    level4 = _section(out, "### Concurrency 4 vs 1")
    assert [line.endswith("| No |") for line in _rows(level4)] == [True, True, True]
    (mean_line,) = [line for line in level4.splitlines() if line.startswith("- Mean: ")]
    assert float(mean_line.removeprefix("- Mean: ").removesuffix("%")) == pytest.approx(
        90.0, abs=0.05
    )


def test_a_declared_tier_level_is_said_to_be_declared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = analyze(f.sweep_evidence((1, 4), 2, efficiency=lambda *_: 1.0, tier_concurrency=1))
    path = tmp_path / "result.json"
    path.write_text(result.model_dump_json(by_alias=True))
    out = _verdict(path, capsys)
    assert "**Levels:** 1, 4; tier decided at concurrency 1 (declared)." in out
    assert "### Concurrency 4 vs 1" in out


def test_a_compact_results_sweep_prints_the_per_level_summary(
    sweep_result: BenchmarkResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "result-compact.json"
    path.write_text(encode_compact(sweep_result))
    out = _verdict(path, capsys)
    sweep = _section(out, "## Concurrency sweep")
    assert "tier decided at concurrency 16 (the highest level)" in sweep
    assert (
        "| Level | Runs | Tokens/s | TTFT p50 (ms) | Avg Power (W) | Power CV | J/token | Speedup "
        "| Efficiency mean (%) | Efficiency std (pp) | Efficiency min (%) | Efficiency max (%) "
        "| Contended runs |"
    ) in sweep
    compact = json.loads(path.read_text())["sweep"]
    for i, level in enumerate(compact["levels"]):
        (row,) = [line for line in sweep.splitlines() if line.startswith(f"| {level} | ")]
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == str(compact["runs"][i])
        assert cells[2] == f"{compact['tokens_per_s'][i]:.2f}"
        assert cells[7] == f"{compact['speedup'][i]:.4f}x"
        assert cells[8] == f"{compact['efficiency_mean_pct'][i]:.2f}"
        assert cells[12] == str(compact["contended_runs"][i])
    (row16,) = [line for line in sweep.splitlines() if line.startswith("| 16 | ")]
    assert row16.endswith("| 1 |")
    assert "The per-run table is in the evidence's result.json" in sweep
    assert SEED_002_HEADER not in out  # the compact form has no per-run table to show


def test_verdict_json_includes_the_sweep(
    sweep_result: BenchmarkResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = tmp_path / "result.json"
    full.write_text(sweep_result.model_dump_json(by_alias=True))
    obj = json.loads(_verdict(full, capsys, "--json"))
    assert Sweep.model_validate(obj["sweep"]) == _sweep(sweep_result)
    compact = tmp_path / "result-compact.json"
    compact.write_text(encode_compact(sweep_result))
    obj = json.loads(_verdict(compact, capsys, "--json"))
    assert obj["sweep"] == json.loads(compact.read_text())["sweep"]


def test_a_result_without_a_sweep_prints_no_sweep_section(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("result.json", "result-compact.json"):
        out = _verdict(run_dir / name, capsys)
        assert "## Firmus Verification Results" in out
        assert "Concurrency sweep" not in out
        assert "Efficiency Statistics" not in out
        assert json.loads(_verdict(run_dir / name, capsys, "--json"))["sweep"] is None
