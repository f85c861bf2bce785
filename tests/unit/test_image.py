"""Static checks of the benchmark image's Dockerfile (no Docker engine exists in CI)."""

from __future__ import annotations

import re
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "benchmark-image" / "Dockerfile"


def _instructions_of(path: Path) -> list[tuple[str, str]]:
    text = path.read_text().replace("\\\n", " ")
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _instructions() -> list[tuple[str, str]]:
    return _instructions_of(DOCKERFILE)


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [rest for word, rest in _instructions() if word == "USER"]
    assert users, "no USER instruction"
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0


def test_entrypoint_is_the_cli_and_models_load_offline() -> None:
    ins = _instructions()
    entry = [rest for word, rest in ins if word == "ENTRYPOINT"]
    assert entry == ['["python", "-m", "modelgrid_bench"]']
    env = " ".join(rest for word, rest in ins if word == "ENV")
    assert "HF_HUB_OFFLINE=1" in env
    assert "MODELGRID_TERMINATION_LOG=/dev/termination-log" in env
    base = [rest for word, rest in ins if word == "ARG" and rest.startswith("BASE=")]
    assert re.search(r"pytorch/pytorch:.*cuda", base[0])


def test_the_package_never_enables_remote_code() -> None:
    pkg = DOCKERFILE.parent / "modelgrid_bench"
    for path in pkg.rglob("*.py"):
        assert "trust_remote_code=True" not in path.read_text(), path
        assert '"trust_remote_code": True' not in path.read_text(), path


ENGINES = DOCKERFILE.parent / "engines"


def test_every_engine_the_chart_names_has_a_recipe_that_runs_the_benchmark_unprivileged() -> None:
    """The chart's engine images (benchmark.engineImages) each come from a recipe: the engine's
    own image with the benchmark installed, the benchmark as entrypoint, non-root, offline."""
    import yaml

    values = yaml.safe_load(
        (DOCKERFILE.parents[1] / "charts/modelgrid-operator/values.yaml").read_text()
    )
    presets = {k for k, v in values["benchmark"]["engineImages"].items() if v}
    assert presets == {p.name.removesuffix(".Dockerfile") for p in ENGINES.glob("*.Dockerfile")}
    for name in presets:
        ins = _instructions_of(ENGINES / f"{name}.Dockerfile")
        users = [rest for word, rest in ins if word == "USER"]
        assert users
        assert users[-1].split(":")[0].isdigit()
        assert int(users[-1].split(":")[0]) != 0
        assert [rest for word, rest in ins if word == "ENTRYPOINT"] == [
            '["python", "-m", "modelgrid_bench"]'
        ]
        env = " ".join(rest for word, rest in ins if word == "ENV")
        assert "HF_HUB_OFFLINE=1" in env
        assert "HOME=/tmp" in env
        run = " ".join(rest for word, rest in ins if word == "RUN")
        assert "'.[bench]'" in run
        assert "import modelgrid_bench.cli" in run
