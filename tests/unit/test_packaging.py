"""Each component installs only its own dependencies; the contract needs only pydantic.

The closure is walked over the installed distributions' metadata (the test venv has every
extra), so it checks what `pip install '.[operator]'` would bring without a network.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement

NVML_OR_NUMPY = {"numpy", "nvidia-ml-py", "pynvml", "torch", "httpx"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(dist: str, extras: set[str]) -> set[str]:
    seen: set[str] = set()
    todo: list[tuple[str, set[str]]] = [(dist, extras)]
    while todo:
        name, wanted = todo.pop()
        key = _norm(name)
        if key in seen and not wanted:
            continue
        seen.add(key)
        for raw in metadata.requires(name) or []:
            req = Requirement(raw)
            if req.marker is not None:
                envs = [{"extra": e} for e in (wanted or {""})]
                if not any(req.marker.evaluate(env) for env in envs):
                    continue
            if _norm(req.name) == key:
                todo.append((req.name, set(req.extras)))  # self-reference: modelgrid[bench]
            elif _norm(req.name) not in seen:
                todo.append((req.name, set(req.extras)))
    return seen


def test_the_operator_extra_brings_no_numpy_and_no_nvml() -> None:
    deps = _closure("modelgrid", {"operator"})
    assert {"kopf", "urllib3", "pyyaml"} <= deps
    # its own API client: the official one (about 15 MiB of its memory) is not installed
    assert "kubernetes" not in deps, sorted(deps)
    assert not deps & NVML_OR_NUMPY, sorted(deps & NVML_OR_NUMPY)


def test_the_base_install_is_the_contract_alone() -> None:
    deps = _closure("modelgrid", set()) - {"modelgrid"}
    assert "pydantic" in deps
    assert not deps & (NVML_OR_NUMPY | {"kopf", "kubernetes", "pyyaml"}), sorted(deps)


def test_the_bench_extra_brings_no_kubernetes_client() -> None:
    deps = _closure("modelgrid", {"bench"})
    assert {"numpy", "nvidia-ml-py", "httpx"} <= deps
    assert not deps & {"kopf", "kubernetes", "prometheus-client"}, sorted(deps)


def _python(body: str, blocked: tuple[str, ...] = ()) -> str:
    """What a fresh interpreter prints running `body` with the top-level packages `blocked`
    unimportable (as where they are not installed); fails on a non-zero exit."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n" + body
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=50, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.timeout(60)
def test_the_operator_and_the_contract_import_without_the_benchmark() -> None:
    # Block the benchmark and its numeric stack, then import the operator's decision code.
    body = (
        "import modelgrid_contract.wire, modelgrid_operator.verdict, modelgrid_operator.reconcile\n"
        "import modelgrid_operator.cli\n"
        "print('ok')\n"
    )
    assert _python(body, ("modelgrid_bench", "numpy", "pynvml", "torch")) == "ok"


@pytest.mark.timeout(60)
def test_the_operator_and_the_reports_run_without_the_kubernetes_client() -> None:
    body = "import modelgrid_operator.__main__, modelgrid_operator.kube, modelgrid_report.cli\n"
    assert _python(body + "print('ok')\n", ("kubernetes",)) == "ok"


@pytest.mark.timeout(60)
def test_the_operator_process_never_loads_the_kubernetes_client_even_where_installed() -> None:
    body = (
        "import modelgrid_operator.__main__\n"
        "print(sorted(m for m, v in sys.modules.items() if m.startswith('kubernetes') and v))\n"
    )
    assert _python(body) == "[]"


def test_the_report_extra_brings_matplotlib_and_the_evidence_reader() -> None:
    deps = _closure("modelgrid", {"report"})
    assert {"matplotlib", "numpy", "urllib3"} <= deps
    assert "kubernetes" not in deps  # `kubectl modelgrid` reads through the operator's client


@pytest.mark.timeout(60)
def test_modelgrid_verdict_and_card_work_without_the_numeric_stack() -> None:
    # The operator image installs only the operator's extra, and `modelgrid` lives in the
    # report package: its verdict and card commands must not need numpy or matplotlib.
    body = (
        "from modelgrid_report import cli, kubectl\n"
        "import contextlib, io\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    cli.main(['card', 'import', '--help'])\n"
        "print('ok' if 'MODEL_CARD.md' in out.getvalue() else out.getvalue())\n"
    )
    assert _python(body, ("modelgrid_bench", "numpy", "matplotlib", "torch")) == "ok"
