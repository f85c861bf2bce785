"""crds/ is the single source of the API: the operator's pydantic views must not drift from it."""

from __future__ import annotations

import datetime as dt
import re
import types
import typing
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

from modelgrid_operator.api import QualificationSpec
from modelgrid_operator.outcome import CLEARED_VERDICT
from modelgrid_operator.policy import TierPolicySpec
from modelgrid_operator.status import QualificationStatus
from modelgrid_operator.statuspatch import validate_status_patch

REPO = Path(__file__).resolve().parents[2]


def _schema(crd_file: str) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "crds" / crd_file).read_text())
    spec: dict[str, Any] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]
    return spec


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated, list):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _bounds(info: FieldInfo) -> dict[str, float]:
    out: dict[str, float] = {}
    metadata = list(info.metadata)
    ann = info.annotation
    for arg in typing.get_args(ann):
        if typing.get_origin(arg) is typing.Annotated:
            for meta in typing.get_args(arg)[1:]:
                metadata.extend(getattr(meta, "metadata", []) or [meta])
    for m in metadata:
        for attr in ("ge", "le", "gt", "lt"):
            v = getattr(m, attr, None)
            if v is not None:
                out[attr] = float(v)
    return out


def _walk(model: type[BaseModel], schema: dict[str, Any], path: str) -> list[str]:
    problems = []
    props = schema.get("properties", {})
    for name, info in model.model_fields.items():
        key = info.alias or name
        where = f"{path}.{key}"
        if key not in props:
            problems.append(f"{where}: in the operator's model but not in the CRD")
            continue
        prop = props[key]
        sub = _model_of(info.annotation)
        if sub is not None:
            target = prop.get("items", prop) if prop.get("type") == "array" else prop
            problems += _walk(sub, target, where)
            continue
        b = _bounds(info)
        if "ge" in b and prop.get("minimum") != b["ge"]:
            problems.append(f"{where}: minimum {prop.get('minimum')} != ge {b['ge']}")
        if "le" in b and prop.get("maximum") != b["le"]:
            problems.append(f"{where}: maximum {prop.get('maximum')} != le {b['le']}")
        if "gt" in b and not (prop.get("minimum") == b["gt"] and prop.get("exclusiveMinimum")):
            problems.append(f"{where}: exclusive minimum differs from gt {b['gt']}")
        default = info.get_default(call_default_factory=True)
        if "default" in prop and default is not None and not callable(default):
            value = (
                [getattr(d, "value", d) for d in default]
                if isinstance(default, list)
                else getattr(default, "value", default)
            )
            if value != prop["default"]:
                problems.append(f"{where}: default {value!r} != CRD default {prop['default']!r}")
    return problems


@pytest.mark.parametrize(
    ("model", "crd"),
    [
        (QualificationSpec, "modelgrid.firmus.ai_modelqualifications.yaml"),
        (TierPolicySpec, "modelgrid.firmus.ai_tierpolicies.yaml"),
    ],
)
def test_operator_models_match_the_crd(model: type[BaseModel], crd: str) -> None:
    assert _walk(model, _schema(crd), "spec") == []


def test_every_qualification_spec_field_is_read_by_the_operator() -> None:
    def names(model: type[BaseModel], schema: dict[str, Any], path: str) -> list[str]:
        missing = []
        fields = {(i.alias or n): i for n, i in model.model_fields.items()}
        for key, prop in schema.get("properties", {}).items():
            if key not in fields:
                missing.append(f"{path}.{key}")
                continue
            sub = _model_of(fields[key].annotation)
            if sub is not None:
                target = prop.get("items", prop) if prop.get("type") == "array" else prop
                missing += names(sub, target, f"{path}.{key}")
        return missing

    assert (
        names(QualificationSpec, _schema("modelgrid.firmus.ai_modelqualifications.yaml"), "spec")
        == []
    )


# --------------------------------------------------------------------------- status


def _status_schema() -> dict[str, Any]:
    doc = yaml.safe_load(
        (REPO / "crds" / "modelgrid.firmus.ai_modelqualifications.yaml").read_text()
    )
    status: dict[str, Any] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "status"
    ]
    return status


def _without_none(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _scalar(annotation: Any) -> tuple[str, set[str] | None]:
    """The JSON type of a scalar annotation, and the values it takes where it names them."""
    if typing.get_origin(annotation) is typing.Literal:
        return "string", set(typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return "string", {m.value for m in annotation}
    return {bool: "boolean", int: "integer", float: "number", str: "string"}[annotation], None


def _type_problems(annotation: Any, prop: dict[str, Any], where: str) -> list[str]:
    ann = _without_none(annotation)
    origin = typing.get_origin(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        want = "object"
    elif origin is list:
        want = "array"
    elif origin is dict:
        want = "object"
    else:
        want, values = _scalar(ann)
        problems = []
        if "enum" in prop and values != set(prop["enum"]):
            problems.append(f"{where}: takes {values}, the CRD {set(prop['enum'])}")
        if prop.get("type") != want:
            problems.append(f"{where}: {want} in the model, {prop.get('type')} in the CRD")
        return problems
    if prop.get("type") != want:
        return [f"{where}: {want} in the model, {prop.get('type')} in the CRD"]
    if origin is list:
        return _type_problems(typing.get_args(ann)[0], prop.get("items", {}), f"{where}[]")
    if origin is dict:
        if "additionalProperties" not in prop:
            return [f"{where}: a map in the model, an object with fixed keys in the CRD"]
        return _type_problems(typing.get_args(ann)[1], prop["additionalProperties"], f"{where}.*")
    return _status_problems(ann, prop, where)


def _status_problems(model: type[BaseModel], schema: dict[str, Any], path: str) -> list[str]:
    """Where `model` and the CRD's `schema` differ: a field on one side only, another JSON type,
    other enum values, another set of required fields."""
    props = schema.get("properties", {})
    fields = {(info.alias or name): info for name, info in model.model_fields.items()}
    problems = [
        f"{path}.{key}: in the CRD but not in the model" for key in props if key not in fields
    ]
    required = {key for key, info in fields.items() if info.is_required()}
    if required != set(schema.get("required", [])):
        problems.append(
            f"{path}: requires {sorted(required)}, the CRD {schema.get('required', [])}"
        )
    for key, info in fields.items():
        if key not in props:
            problems.append(f"{path}.{key}: in the model but not in the CRD")
        else:
            problems += _type_problems(info.annotation, props[key], f"{path}.{key}")
    return problems


def test_the_status_model_is_the_crds_status_schema() -> None:
    """Every status field the operator may write exists in the CRD with its JSON type (the
    apiserver drops a key it does not know in silence), and every CRD status field is in it."""
    assert _status_problems(QualificationStatus, _status_schema(), "status") == []


class _Drifted(BaseModel):
    phase: Literal["Pending", "Running"] | None = None  # fewer values than the CRD
    job_name: int | None = Field(None, alias="jobName")  # another type
    typo: str | None = None  # not in the CRD


def test_the_status_drift_check_sees_what_it_is_for() -> None:
    problems = _status_problems(_Drifted, _status_schema(), "status")
    assert "status.typo: in the model but not in the CRD" in problems
    assert "status.jobName: integer in the model, string in the CRD" in problems
    assert any(p.startswith("status.phase: takes") for p in problems)
    assert "status.measured: in the CRD but not in the model" in problems


# --------------------------------------------------------------------------- status patches

#: A patch like a verdict's: top-level scalars, nested objects, lists of objects, a map.
VERDICT_PATCH: dict[str, Any] = {
    "observedGeneration": 1,
    "phase": "Succeeded",
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Qualified",
            "message": "tier-1",
            "lastTransitionTime": "2026-03-01T12:12:00Z",
            "observedGeneration": 1,
        }
    ],
    "tier": {"name": "tier-1", "number": 1, "discountPercent": 20},
    "discountPercent": 20,
    "qualified": True,
    "measured": {
        "powerCV": 0.05,
        "avgPowerW": 100,  # an integer is a JSON number
        "runs": [{"run": 1, "powerCV": 0.05}],
        "runToRun": {"power_cv": {"n": 2, "mean": 0.05, "std": 0.001}},
        "workDone": {"engineOnGpuExpected": True},
    },
    "verification": {"result": "Verified", "claims": [{"metric": "powerCV", "claimed": 0.05}]},
    "flags": ["borderline"],
    "history": [{"tier": 1, "verification": "Verified", "policy": "model-card"}],
    "progress": None,
}


def test_a_status_patch_the_crd_takes_passes() -> None:
    validate_status_patch(VERDICT_PATCH)
    validate_status_patch({})
    # a nested object is merged key by key: a partial one is a patch, not a missing field
    validate_status_patch({"progress": {"summary": "run 2/3"}, "environment": {"simulated": False}})


def test_none_removes_a_field_the_crd_has_at_any_depth() -> None:
    validate_status_patch(CLEARED_VERDICT)
    validate_status_patch({"measured": {"powerCV": None, "runToRun": {"power_cv": None}}})
    validate_status_patch({"environment": {"engine": None}, "evidence": {"pod": None}})


@pytest.mark.parametrize(
    ("patch", "says"),
    [
        ({"phsae": "Running"}, "status.phsae: not in the CRD's status schema"),
        ({"tierName": None}, "status.tierName: not in the CRD's status schema"),  # removes nothing
        ({"progress": {"stag": "measuring"}}, "status.progress.stag: not in the CRD"),
        ({"measured": {"workDone": {"gpuUtil": 90}}}, "status.measured.workDone.gpuUtil: not in"),
        ({"measured": {"runs": [{"run": 1, "cv": 0.1}]}}, "status.measured.runs.0.cv: not in"),
        ({"measured": {"runToRun": {"cv": {"median": 1}}}}, "status.measured.runToRun.cv.median:"),
        ({"environment": {"engine": {"image": "x"}}}, "status.environment.engine.image: not in"),
    ],
)
def test_an_unknown_key_is_refused_by_name(patch: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        validate_status_patch(patch)


@pytest.mark.parametrize(
    ("patch", "says"),
    [
        ({"attempt": "1"}, "status.attempt: Input should be a valid integer"),
        ({"attempt": 1.5}, "status.attempt: Input should be a valid integer"),
        ({"qualified": 1}, "status.qualified: Input should be a valid boolean"),
        ({"qualified": "true"}, "status.qualified: Input should be a valid boolean"),
        ({"discountPercent": "20"}, "status.discountPercent: Input should be a valid number"),
        ({"jobName": 7}, "status.jobName: Input should be a valid string"),
        ({"phase": "Done"}, "status.phase: Input should be 'Pending'"),
        ({"flags": "simulated"}, "status.flags: Input should be a valid array"),
        ({"measured": 0.05}, "status.measured: Input should be an object"),
        ({"tier": {"number": "1"}}, "status.tier.number: Input should be a valid integer"),
        ({"verification": {"result": "Passed"}}, "status.verification.result: Input should be"),
        ({"conditions": [{"type": "Ready", "status": "True"}]}, "status.conditions.0.reason"),
        ({"startedAt": dt.datetime(2026, 3, 1, tzinfo=dt.UTC)}, "status.startedAt: not JSON"),
    ],
)
def test_a_mistyped_value_is_refused_by_name(patch: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        validate_status_patch(patch)


def test_every_problem_of_a_patch_is_named_at_once() -> None:
    with pytest.raises(ValueError, match="status patch outside") as exc:
        validate_status_patch({**VERDICT_PATCH, "phsae": "x", "attempt": "1"})
    assert "status.phsae" in str(exc.value)
    assert "status.attempt" in str(exc.value)
