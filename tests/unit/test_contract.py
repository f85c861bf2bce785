"""The result contract: compact form always fits, is validated strictly, cannot fake 'real'."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgrid_bench.analysis import analyze
from modelgrid_contract.result import (
    TERMINATION_MESSAGE_LIMIT_BYTES,
    BenchmarkResult,
    GpuInfo,
    PowerSourceInfo,
    PowerSourceKind,
)
from modelgrid_contract.wire import ResultRejected, decode_compact, encode_compact
from modelgrid_contract.workload import Workload
from tests import factory as f

LEGACY_KEYS = (
    "power_cv",
    "avg_power_watts",
    "peak_power_watts",
    "joules_per_token",
    "tokens_per_joule",
)


def _result(**kw: object) -> BenchmarkResult:
    ev = f.evidence(f.square(280.0, 320.0, 3.0), [(0.5, 12.5), (13.0, 25.0)], **kw)  # type: ignore[arg-type]
    return analyze(ev)


def _worst_case(gpus: int, repeats: int, name_len: int) -> BenchmarkResult:
    runs = [(1.0 + 2.5 * i, 3.0 + 2.5 * i) for i in range(repeats)]
    ev = f.evidence(
        f.square(280.0, 320.0, 0.7), runs, gpus=gpus, interval_s=0.1, requests_per_run=2
    )
    base = analyze(ev)
    long = "M" * name_len
    env = base.environment.model_copy(
        update={
            "gpus": [
                GpuInfo(index=i, name="NVIDIA H200 " + "X" * name_len, uuid="GPU-" + "f" * 200)
                for i in range(gpus)
            ],
            "node_name": "n" * name_len,
            "driver_version": "9" * 100,
        }
    )
    backend = base.backend.model_copy(update={"model": long})
    return base.model_copy(update={"environment": env, "backend": backend})


def test_compact_keeps_the_programs_keys_and_round_trips() -> None:
    r = _result()
    text = encode_compact(r)
    obj = json.loads(text)
    for key in LEGACY_KEYS:
        assert key in obj
    assert r.pooled is not None
    assert obj["avg_power_watts"] == pytest.approx(r.pooled.avg_power_w, rel=1e-4)
    c = decode_compact(text)
    assert c.power_cv == pytest.approx(r.pooled.power_cv, rel=1e-4)
    assert c.runs is not None
    assert len(c.runs.avg_power_w) == 2
    assert c.truncated == []
    assert c.workload_digest == r.workload.digest()


@pytest.mark.parametrize(
    ("gpus", "repeats", "name_len"), [(8, 100, 253), (8, 40, 1000), (1, 100, 5000)]
)
def test_compact_always_fits_the_termination_message(
    gpus: int, repeats: int, name_len: int
) -> None:
    r = _worst_case(gpus, repeats, name_len)
    text = encode_compact(r)
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT_BYTES
    c = decode_compact(text)
    assert c.truncated  # something had to give, and it says what
    assert c.power_cv is not None
    assert c.gpu.count == gpus


@settings(max_examples=25)
@given(
    gpus=st.integers(1, 8),
    repeats=st.integers(1, 100),
    name_len=st.integers(0, 600),
)
def test_compact_fits_for_any_size(gpus: int, repeats: int, name_len: int) -> None:
    text = encode_compact(_worst_case(gpus, min(repeats, 30), name_len))
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT_BYTES
    decode_compact(text)


def test_simulated_is_derived_and_cannot_be_overridden() -> None:
    r = _result(kind=PowerSourceKind.REPLAY)
    assert r.simulated
    dumped = json.loads(r.model_dump_json(by_alias=True))
    assert dumped["simulated"] is True
    dumped["simulated"] = False
    with pytest.raises(ValueError, match="contradicts"):
        BenchmarkResult.model_validate(dumped)
    with pytest.raises(ValueError, match="contradicts"):
        PowerSourceInfo.model_validate(
            {
                "kind": "replay",
                "instant_power_field": True,
                "energy_counter": True,
                "simulated": False,
            }
        )
    obj = json.loads(encode_compact(r))
    assert obj["simulated"] is True
    assert "simulated" in obj["flags"]
    obj["simulated"] = False
    with pytest.raises(ResultRejected) as exc:
        decode_compact(json.dumps(obj))
    assert exc.value.reason == "MalformedResult"
    assert "must be simulated" in exc.value.message


def test_a_synthetic_backend_makes_the_result_simulated() -> None:
    r = _result(simulated_backend=True)
    assert r.simulated
    assert decode_compact(encode_compact(r)).simulated


def test_full_result_round_trips_through_json() -> None:
    r = _result()
    again = BenchmarkResult.model_validate_json(r.model_dump_json(by_alias=True))
    assert again == r


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "EmptyResult"),
        (b"x" * (TERMINATION_MESSAGE_LIMIT_BYTES + 1), "OversizedResult"),
        (b"{not json", "MalformedResult"),
        (b"[1, 2]", "MalformedResult"),
        (b'{"schema": "modelgrid.bench/v9"}', "UnknownSchemaVersion"),
        (b'{"schema": "modelgrid.bench/v1", "ok": true}', "MalformedResult"),
        (b"\xff\xfe", "MalformedResult"),
    ],
)
def test_decode_refuses_what_cannot_be_trusted(raw: bytes, reason: str) -> None:
    with pytest.raises(ResultRejected) as exc:
        decode_compact(raw)
    assert exc.value.reason == reason
    assert exc.value.message


def test_decode_refuses_unknown_keys_and_impossible_values() -> None:
    obj = json.loads(encode_compact(_result()))
    obj["tier"] = "tier_1_efficient"  # the benchmark measures; it never decides a tier
    with pytest.raises(ResultRejected, match="tier"):
        decode_compact(json.dumps(obj))
    obj = json.loads(encode_compact(_result()))
    obj["power_cv"] = -0.2
    with pytest.raises(ResultRejected, match="power_cv"):
        decode_compact(json.dumps(obj))


def test_workload_bounds_have_readable_errors() -> None:
    with pytest.raises(ValueError, match="tokens_per_sample"):
        Workload(tokens_per_sample=0)
    with pytest.raises(ValueError, match="top_p"):
        Workload(top_p=0.0)
    assert Workload().digest() == Workload().digest()
    assert Workload(seed=1).digest() != Workload().digest()


def test_an_oversized_result_of_a_newer_schema_is_refused_as_unknown_not_oversized() -> None:
    newer = json.dumps({"schema": "modelgrid.bench/v2", "detail": "x" * 6000})
    with pytest.raises(ResultRejected) as info:
        decode_compact(newer)
    assert info.value.reason == "UnknownSchemaVersion"
    ours = json.dumps({"schema": "modelgrid.bench/v1", "detail": "x" * 6000})
    with pytest.raises(ResultRejected) as big:
        decode_compact(ours)
    assert big.value.reason == "OversizedResult"


@pytest.mark.timeout(60)
def test_the_operator_prints_its_help_and_exits_without_starting() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "modelgrid_operator", "--help"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m modelgrid_operator" in proc.stdout
    assert "MODELGRID_" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "modelgrid_operator", "--bogus"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert bad.returncode == 2
