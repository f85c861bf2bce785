"""The base of the operator's typed views of modelgrid.firmus.ai objects. Pure.

One base so that api (ModelQualification spec), policy (TierPolicy spec) and status read the
API alike: fields by their Python names or the CRD's camelCase aliases, frozen once read.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ApiModel(BaseModel):
    # Unknown fields are ignored, not refused: the apiserver has already validated the object
    # against the CRD, and a newer CRD must not crash an older operator.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)
