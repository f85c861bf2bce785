"""The declared inference load, as the benchmark runs it and the operator asks for it. Pure.

`Workload.digest()` fingerprints it, so a result can be matched to the workload that asked.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from modelgrid_contract._model import Strict as _Strict

#: At most this many levels in a sweep (the compact result is proven to fit with them).
MAX_LEVELS = 8


class PromptType(StrEnum):
    CONVERSATIONAL = "conversational"
    CODE = "code"
    TRANSLATION = "translation"


class Workload(_Strict):
    """The declared inference load. Field bounds match the ModelQualification CRD.

    The operator reads it from the CRD's camelCase (`tokensPerSample`); the benchmark from its
    own snake_case JSON. Both names are accepted; the digest is over the snake_case form.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    samples: Annotated[int, Field(ge=1, le=100_000, description="Prompts per run")] = 20
    tokens_per_sample: Annotated[int, Field(ge=1, le=32_768)] = 128
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 1
    input_tokens: Annotated[int, Field(ge=1, le=131_072)] = 128
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    prompt_type: PromptType = PromptType.CONVERSATIONAL
    warmup_samples: Annotated[int, Field(ge=0, le=10_000)] = 2
    repeats: Annotated[int, Field(ge=1, le=100)] = 3
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 1
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    #: A concurrency sweep (seed 002): `repeats` runs at each level, interleaved; replaces
    #: `concurrency`. The tier is decided at `tier_concurrency` (default: the highest level).
    concurrency_levels: (
        Annotated[
            tuple[Annotated[int, Field(ge=1, le=1024)], ...],
            Field(min_length=2, max_length=MAX_LEVELS),
        ]
        | None
    ) = None
    tier_concurrency: Annotated[int, Field(ge=1, le=1024)] | None = None

    @model_validator(mode="after")
    def _sweep(self) -> Workload:
        levels = self.concurrency_levels
        if levels is None:
            if self.tier_concurrency is not None:
                raise ValueError("tier_concurrency needs concurrency_levels")
            return self
        if any(b <= a for a, b in itertools.pairwise(levels)):
            raise ValueError("concurrency_levels must increase strictly, like [1, 4, 16]")
        if self.concurrency != 1:
            raise ValueError("set concurrency_levels or concurrency, not both")
        if self.tier_concurrency is not None and self.tier_concurrency not in levels:
            raise ValueError("tier_concurrency must be one of concurrency_levels")
        return self

    def levels(self) -> tuple[int, ...]:
        """The concurrency of each level, in order (one level without a sweep)."""
        return self.concurrency_levels or (self.concurrency,)

    def tier_level(self) -> int:
        """The concurrency whose runs the tier is decided from."""
        return self.tier_concurrency or max(self.levels())

    def digest(self) -> str:
        """A short stable fingerprint, so a result can be matched to the workload that asked.
        Unset sweep fields are left out, so a workload without one keeps its digest."""
        body = self.model_dump(mode="json")
        for key in ("concurrency_levels", "tier_concurrency"):
            if body.get(key) is None:
                body.pop(key, None)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
