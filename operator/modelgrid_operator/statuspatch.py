"""Checks a status merge patch against the ModelQualification CRD's status schema. Pure.

The apiserver prunes a status key its CRD does not define without a word, so the reconciler
calls `validate_status_patch` before every status patch: a misspelt or mistyped key fails
loudly here instead of vanishing there. The schema is `status.QualificationStatus`.
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from modelgrid_operator.status import QualificationStatus

_UNKNOWN = "not in the CRD's status schema (the apiserver would drop it)"


def validate_status_patch(patch: Mapping[str, Any]) -> None:
    """Raise ValueError, naming every offending key, when the JSON merge patch `patch` (the
    body under `status`) would write what the CRD's status schema does not have or take.

    As in RFC 7386, None removes a field (the field must still be one the CRD has: removing a
    misspelt key removes nothing) and a nested object is merged key by key, so it may be
    partial; a list replaces the stored one whole, so its items are checked as full objects.
    Values are checked as the JSON the patch is sent as: "5" is not an integer, 1 not a bool.
    """
    problems = _object_problems(QualificationStatus, patch, "status")
    if problems:
        raise ValueError("status patch outside the CRD's status schema: " + "; ".join(problems))


def _object_problems(model: type[BaseModel], patch: object, where: str) -> list[str]:
    if not isinstance(patch, Mapping):
        return [f"{where}: {type(patch).__name__}, not an object"]
    fields = _fields(model)
    problems: list[str] = []
    for key, value in patch.items():
        at = f"{where}.{key}"
        if key not in fields:
            problems.append(f"{at}: {_UNKNOWN}")
        elif value is not None:
            problems += _value_problems(fields[key], value, at)
    return problems


def _value_problems(field: _Field, value: object, at: str) -> list[str]:
    adapter, merged, mapped = field
    if merged is not None and isinstance(value, Mapping):
        return _object_problems(merged, value, at)
    if mapped is not None and isinstance(value, Mapping):
        return [
            p
            for k, v in value.items()
            if v is not None
            for p in _object_problems(mapped, v, f"{at}.{k}")
        ]
    try:
        text = json.dumps(value)
    except (TypeError, ValueError) as exc:
        return [f"{at}: not JSON ({exc})"]
    try:
        adapter.validate_json(text, strict=True)
    except ValidationError as exc:
        return [_said(at, err) for err in exc.errors(include_url=False)]
    return []


def _said(at: str, err: ErrorDetails) -> str:
    where = ".".join([at, *(str(x) for x in err["loc"])])
    if err["type"] == "extra_forbidden":
        return f"{where}: {_UNKNOWN}"
    return f"{where}: {err['msg']}"


#: A field's check: its value's adapter, and the model of an object (merged key by key) or of
#: a map's values (dict[str, Model]), where it is one.
_Field = tuple[TypeAdapter[Any], type[BaseModel] | None, type[BaseModel] | None]


def _field(annotation: Any) -> _Field:
    for arg in typing.get_args(annotation):  # X | None
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return TypeAdapter(annotation), arg, None
        if typing.get_origin(arg) is dict:
            return TypeAdapter(annotation), None, typing.get_args(arg)[1]
    return TypeAdapter(annotation), None, None


@functools.cache
def _fields(model: type[BaseModel]) -> dict[str, _Field]:
    """A model's fields by the key the CRD spells them with."""
    return {(i.alias or n): _field(i.annotation) for n, i in model.model_fields.items()}
