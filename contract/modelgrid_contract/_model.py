"""The base of every contract model: strict (unknown keys refused) and immutable. Pure."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
