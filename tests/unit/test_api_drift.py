"""crds/ is the single source of the API: the operator's pydantic views must not drift from it."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from modelgrid_operator.api import QualificationSpec, TierPolicySpec

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
