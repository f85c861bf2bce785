"""What kstatus says about an object: sigs.k8s.io/cli-utils/pkg/kstatus/status, the library
Flux and kpt use to decide whether an object is Current, InProgress, Failed or Terminating.

The binary is hack/kstatus, built once by hack/build-kstatus.sh into the modelgrid cache
(about a minute cold, needs Go and the module proxy; instant when warm), or taken from
$MODELGRID_KSTATUS_BIN. When it cannot be built, the calling test fails under CI=true and
skips elsewhere, with the reason.

    status, message = kstatus_one(qualification)
    assert status == "Current", message
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "hack" / "build-kstatus.sh"
ENV_BIN = "MODELGRID_KSTATUS_BIN"

#: Running the binary: it only reads stdin and computes, so this is a hang detector.
RUN_TIMEOUT_S = 120
#: A cold build (module downloads + compiling apimachinery) took 53 s on 2 cores.
BUILD_TIMEOUT_S = 480

FIELDS = ("name", "namespace", "status", "message")
#: kstatus's statuses (status.Status in cli-utils).
STATUSES = frozenset({"InProgress", "Failed", "Current", "Terminating", "NotFound", "Unknown"})

# The path once built, or why it could not be: one build attempt per test session.
_cache: dict[str, Path | str] = {}


def _unavailable(reason: str) -> NoReturn:
    message = f"kstatus is not available: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _build() -> Path | str:
    """The built binary's path, or the reason it could not be built."""
    try:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            capture_output=True,
            text=True,
            check=False,
            timeout=BUILD_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"{BUILD_SCRIPT.relative_to(REPO)} ran past {BUILD_TIMEOUT_S} s"
    except OSError as exc:
        return f"could not run {BUILD_SCRIPT.relative_to(REPO)}: {exc}"
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-5:]) or "no output"
        return f"{BUILD_SCRIPT.relative_to(REPO)} exited {proc.returncode}: {tail}"
    path = Path(lines[-1])
    if not (path.is_file() and os.access(path, os.X_OK)):
        return f"{BUILD_SCRIPT.relative_to(REPO)} printed {path}, which is not an executable file"
    return path


def kstatus_binary() -> Path:
    """$MODELGRID_KSTATUS_BIN, else the binary hack/build-kstatus.sh builds (once a session)."""
    env = os.environ.get(ENV_BIN)
    if env:
        path = Path(env)
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"{ENV_BIN}={env} is not an executable file", pytrace=False)
        return path
    if "bin" not in _cache:
        _cache["bin"] = _build()
    found = _cache["bin"]
    if isinstance(found, str):
        _unavailable(found)
    return found


def run_kstatus(stdin: str) -> subprocess.CompletedProcess[str]:
    """Runs the binary on raw stdin text, whatever its exit: for tests of bad input."""
    return subprocess.run(
        [str(kstatus_binary())],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=RUN_TIMEOUT_S,
    )


def kstatus(objs: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """kstatus's verdict on each object, in order: {"name", "namespace", "status", "message"}."""
    proc = run_kstatus(json.dumps(list(objs)))
    if proc.returncode != 0:
        raise AssertionError(f"kstatus exited {proc.returncode}: {proc.stderr.strip()}")
    out = json.loads(proc.stdout)
    if not isinstance(out, list) or len(out) != len(objs):
        raise AssertionError(f"kstatus printed {proc.stdout!r} for {len(objs)} object(s)")
    results: list[dict[str, str]] = []
    for item in out:
        if not isinstance(item, dict) or item.get("status") not in STATUSES:
            raise AssertionError(f"kstatus printed an unexpected item: {item!r}")
        results.append({k: str(item.get(k, "")) for k in FIELDS})
    return results


def kstatus_one(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(status, message) that kstatus computes for one object."""
    (result,) = kstatus([obj])
    return result["status"], result["message"]
