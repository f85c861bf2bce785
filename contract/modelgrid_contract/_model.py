"""The base of every contract model: strict (unknown keys refused) and immutable. Pure."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Wire(BaseModel):
    """The base of what travels in a termination message: also no NaN or Infinity anywhere
    (JSON has neither, and a status holding one cannot be written)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
