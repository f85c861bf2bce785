"""kstatus (sigs.k8s.io/cli-utils, as Flux and kpt run it) on hand-built ModelQualifications:
the conditions the operator writes (Ready, Reconciling, Stalled) and observedGeneration mean
to kstatus what the CRD says they mean.

The first test builds hack/kstatus with Go (hack/build-kstatus.sh, about a minute cold, cached
after), hence the `slow` marker and the generous timeout; where it cannot be built these tests
skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kstatus import kstatus, kstatus_binary, kstatus_one, run_kstatus

# The timeout covers a cold build in the first test's setup (hack/build-kstatus.sh, 53 s on
# 2 cores with empty Go caches; tests.kstatus gives the build 480 s and each run 120 s).
pytestmark = [pytest.mark.slow, pytest.mark.go, pytest.mark.timeout(600)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "qualification.yaml"
T = "2026-11-20T10:00:00Z"


@pytest.fixture(scope="module", autouse=True)
def _built() -> Path:
    """Build (or find) the binary once, before the first test's own work."""
    return kstatus_binary()


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": T,
        "observedGeneration": 3,
    }


def qualification(
    *conditions: dict[str, Any], generation: int = 3, observed: int | None = 3, **meta: Any
) -> dict[str, Any]:
    """The shipped example, at `generation`, with a status of `conditions`."""
    obj: dict[str, Any] = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    obj["metadata"].update(generation=generation, uid="0b7c1e0e-1111-4c3a-9e52-6f0e2b1c0d01")
    obj["metadata"].update(meta)
    status: dict[str, Any] = {"phase": "Running", "conditions": list(conditions)}
    if observed is not None:
        status["observedGeneration"] = observed
    obj["status"] = status
    return obj


def verified() -> list[dict[str, Any]]:
    return [
        condition("Ready", "True", "Verified", "tier 1 at 0.7 J/token"),
        condition("Reconciling", "False", "Verified"),
        condition("Stalled", "False", "Verified"),
    ]


def test_a_verified_qualification_is_current() -> None:
    status, message = kstatus_one(qualification(*verified()))
    assert status == "Current", message


def test_stalled_is_failed_with_the_condition_message() -> None:
    stalled = condition(
        "Stalled", "True", "BenchmarkFailed", "the benchmark pod exited 3: no GPU visible"
    )
    obj = qualification(
        condition("Ready", "False", "BenchmarkFailed", "no verdict"),
        condition("Reconciling", "False", "BenchmarkFailed"),
        stalled,
    )
    status, message = kstatus_one(obj)
    assert status == "Failed"
    assert "the benchmark pod exited 3: no GPU visible" in message


def test_reconciling_is_in_progress() -> None:
    obj = qualification(
        condition("Ready", "False", "Running", "the benchmark runs"),
        condition("Reconciling", "True", "Running", "the benchmark runs on gpu-h200-0"),
        condition("Stalled", "False", "Running"),
    )
    status, message = kstatus_one(obj)
    assert status == "InProgress"
    assert "the benchmark runs on gpu-h200-0" in message


def test_an_unobserved_generation_is_in_progress_whatever_the_conditions_say() -> None:
    # A spec edit (generation 4) the operator has not yet seen: the old Ready=True is stale.
    status, message = kstatus_one(qualification(*verified(), generation=4, observed=3))
    assert status == "InProgress"
    assert "generation is 4, but latest observed generation is 3" in message


def test_not_ready_and_not_reconciling_is_in_progress() -> None:
    status, _ = kstatus_one(qualification(condition("Ready", "False", "Pending", "accepted")))
    assert status == "InProgress"


def test_a_deleted_qualification_is_terminating() -> None:
    obj = qualification(*verified(), deletionTimestamp=T, finalizers=["modelgrid.firmus.ai/x"])
    status, _ = kstatus_one(obj)
    assert status == "Terminating"


def test_many_objects_keep_their_order_names_and_namespaces() -> None:
    a = qualification(*verified())
    b = qualification(condition("Reconciling", "True", "Scheduling", "waiting for a node"))
    b["metadata"].update(name="second", namespace="team-b")
    got = kstatus([a, b])
    assert [(r["name"], r["namespace"], r["status"]) for r in got] == [
        ("llama-8b-shape", "default", "Current"),
        ("second", "team-b", "InProgress"),
    ]


def test_one_object_alone_is_accepted() -> None:
    proc = run_kstatus(json.dumps(qualification(*verified())))
    assert proc.returncode == 0, proc.stderr
    assert [r["status"] for r in json.loads(proc.stdout)] == ["Current"]


@pytest.mark.parametrize(
    ("stdin", "complaint"),
    [
        ("", "no input"),
        ("{not json", "not JSON"),
        ("[1]", "item 0 is not a JSON object"),
        ('"text"', "want a JSON object or an array"),
        ('[{"metadata": {"name": "x"}}]', "no apiVersion or kind"),
        ('{"apiVersion": "v1", "kind": "X"} {}', "trailing data"),
    ],
)
def test_bad_input_exits_2_with_one_line(stdin: str, complaint: str) -> None:
    proc = run_kstatus(stdin)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert complaint in lines[0]
