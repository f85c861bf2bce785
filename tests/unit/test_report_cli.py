"""`modelgrid report|trace|verdict` and `kubectl modelgrid` offline: from evidence folders and
result files, with bad input as one line and exit 2. No cluster."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import tests.factory as f
from modelgrid_bench.analysis import analyze
from modelgrid_bench.evidence import read_evidence, write_result
from modelgrid_contract.wire import encode_compact
from modelgrid_report import cli, kubectl
from modelgrid_report.fleet import entry_from_status
from modelgrid_report.sources import evidence_for


def _session_folder(out: Path, seed: int) -> Path:
    """A real evidence folder and its full result (two 12 s runs at 100 W with a 5 W ripple,
    an idle baseline first), written by the benchmark's own writers."""
    ev = f.evidence(
        f.square(95.0, 105.0, 3.0), list(f.PRICED_RUNS), idle_w=60.0, baseline=(0.1, 0.9), seed=seed
    )
    f.evidence_dir(out, ev)
    write_result(out, analyze(ev))
    return out


#: The sandbox's policy: the model card's table, simulated results allowed.
SANDBOX_POLICY = (
    Path(__file__).resolve().parents[2] / "hack" / "sandbox" / "model-card-sandbox.yaml"
)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evidence")
    return _session_folder(root / "model-a", 1), _session_folder(root / "model-b", 2)


def test_the_report_from_evidence_folders_prices_them_as_the_verdict_does(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(
            [
                "report",
                "--from",
                *map(str, folders),
                "--policy",
                str(SANDBOX_POLICY),
                "--format",
                "json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    entries = {e["name"]: e for e in doc["entries"]}
    assert set(entries) == {"model-a", "model-b"}
    for folder in folders:
        result = json.loads(encode_compact(analyze(read_evidence(folder))))
        e = entries[folder.name]
        assert e["state"] == "tiered"
        assert e["tier_number"] in (1, 2, 3)
        assert e["policy"] == "model-card-sandbox"
        assert e["simulated"] is False
        assert e["power_cv"] == result["power_cv"]
        assert e["avg_power_w"] == result["avg_power_watts"]
        assert [e["power_cv_low"], e["power_cv_high"]] == result["power_cv_ci95"]
    assert any("not checked" in n for n in doc["notes"])


def test_the_report_folder_has_the_markdown_and_readable_pngs(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert (
        cli.main(
            [
                "report",
                "--from",
                *map(str, folders),
                "--policy",
                str(SANDBOX_POLICY),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert md.startswith("# Power Variance Analysis Results")
    assert "# Per-Run Granular Analysis" in md
    assert "`fleet-cv.png`" in md
    assert "`traces/model-a.png`" in md
    w, h = _png_size(out / "fleet-cv.png")
    assert (w, h >= 400) == (1200, True)
    assert _png_size(out / "traces" / "model-a.png") == (1200, 700)
    assert (out / "traces" / "model-b.png").stat().st_size > 30_000


def test_a_forged_result_is_listed_refused_never_tiered(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compact = json.loads(encode_compact(analyze(read_evidence(folders[0]))))
    compact["power_cv"] = 0.001  # a better CV than the runs support
    forged = tmp_path / "forged" / "result-compact.json"
    forged.parent.mkdir()
    forged.write_text(json.dumps(compact))
    assert (
        cli.main(
            ["report", "--from", str(forged), "--policy", str(SANDBOX_POLICY), "--format", "json"]
        )
        == 0
    )
    (entry,) = json.loads(capsys.readouterr().out)["entries"]
    assert entry["state"] == "refused"
    assert entry["tier_number"] is None
    assert entry["reason"]


def test_kubectl_style_takes_dash_o_for_the_format(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        kubectl.main(
            ["report", "--from", str(folders[0]), "--policy", str(SANDBOX_POLICY), "-o", "json"]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["entries"][0]["name"] == "model-a"


def test_trace_from_an_evidence_folder(folders: tuple[Path, Path], tmp_path: Path) -> None:
    png = tmp_path / "t.png"
    assert cli.main(["trace", "--evidence", str(folders[0]), "-o", str(png)]) == 0
    assert _png_size(png) == (1200, 700)


def test_swapped_evidence_is_set_aside(folders: tuple[Path, Path], tmp_path: Path) -> None:
    root = tmp_path / "claim"
    shutil.copytree(folders[0], root / "team-a" / "q" / "run")
    cr = f.qualification_cr(
        "q",
        evidence={
            "kept": True,
            "path": "team-a/q/run",
            "traceSha256": "0" * 64,  # not the file's
        },
    )
    folder, why = evidence_for(entry_from_status(cr), root)
    assert folder is None
    assert "not the priced evidence" in why
    digest = hashlib.sha256((root / "team-a/q/run/trace.csv").read_bytes())
    cr["status"]["evidence"]["traceSha256"] = digest.hexdigest()
    folder, why = evidence_for(entry_from_status(cr), root)
    assert folder == root / "team-a" / "q" / "run"
    assert why == ""


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["report", "--from", "/no/such/result.json"], "cannot read"),
        (["report", "--from", "{tmp}/notjson.json"], "refused"),
        (["report", "--kubeconfig", "/no/such/kubeconfig"], "kubeconfig"),
        (["verdict", "q", "--kubeconfig", "/no/such/kubeconfig"], "kubeconfig"),
        (["trace", "q", "-o", "{tmp}/x.png"], "--evidence"),
        (["trace"], "required"),
        (["report", "--format", "yaml"], "invalid choice"),
        (
            ["report", "--from", "{tmp}/notjson.json", "--policy", "{tmp}/bad-policy.yaml"],
            "TierPolicy",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notjson.json").write_text("{not json")
    (tmp_path / "bad-policy.yaml").write_text("spec: {tiers: []}\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = cli.main(argv)
    err = capsys.readouterr().err
    if words == "refused":
        # a file that is no result is listed refused in the report, not a crash
        assert code == 0
        return
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert words in err
    assert "Traceback" not in err


def test_the_offline_verdict_still_answers_through_modelgrid(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["verdict", "--result", str(folders[0] / "result.json")]) == 0
    assert "## Firmus Verification Results" in capsys.readouterr().out


# --------------------------------------------------------------------------- evidence checked


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda d: f.set_csv_cell(d / "trace.csv", 40, "power_w", "900.0"), id="trace"),
        pytest.param(
            lambda d: f.edit_evidence_json(
                d, lambda doc: doc["timeline"]["runs"][0].update(end_s=5.0)
            ),
            id="timeline",
        ),
        pytest.param(
            lambda d: (d / "result.json").write_text(
                (d / "result.json").read_text().replace('"power_cv": 0.', '"power_cv": 0.00', 1)
            ),
            id="result",
        ),
    ],
)
def test_evidence_changed_after_the_fact_is_refused_offline(
    tamper: Any, folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _copy(folders[0], tmp_path / "x")
    tamper(folder)
    out = tmp_path / "out"
    argv = ["report", "--from", str(folder), "--policy", str(SANDBOX_POLICY), "--output", str(out)]
    assert cli.main(argv) == 0
    doc_out = (out / "report.md").read_text()
    assert "not tiered (refused" in doc_out
    assert not (out / "traces").exists()  # nothing unverified is drawn
    assert cli.main(["trace", "--evidence", str(folder), "-o", str(tmp_path / "t.png")]) == 2
    assert not (tmp_path / "t.png").exists()
    capsys.readouterr()


def test_kept_evidence_that_does_not_reproduce_the_status_is_set_aside(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    from modelgrid_report.sources import Loaded, attach_evidence

    root = tmp_path / "claim"
    folder = _copy(folders[0], root / "team-a" / "q" / "run")
    priced = encode_compact(analyze(read_evidence(folders[0])))
    cr = f.qualification_cr("q", evidence={"kept": True, "path": "team-a/q/run"})
    cr["status"]["result"] = priced
    drawn: list[str] = []
    loaded = Loaded(entries=[entry_from_status(cr)])
    attach_evidence(loaded, root, lambda e, ev, full: drawn.append(e.key))
    assert drawn == ["team-a/q"]
    f.set_csv_cell(folder / "trace.csv", 40, "power_w", "900.0")
    loaded = Loaded(entries=[entry_from_status(cr)])
    attach_evidence(loaded, root, lambda e, ev, full: drawn.append("again"))
    assert drawn == ["team-a/q"]
    assert any("does not reproduce the priced result" in n for n in loaded.notes), loaded.notes


def test_an_unwritable_output_is_one_line_and_exit_2(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    argv = ["report", "--from", str(folders[0]), "--policy", str(SANDBOX_POLICY)]
    assert cli.main([*argv, "--output", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert cli.main(["trace", "--evidence", str(folders[0]), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
