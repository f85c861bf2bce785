"""The declared inference load, as the benchmark runs it and the operator asks for it. Pure.

`Workload.digest()` fingerprints it, so a result can be matched to the workload that asked.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from modelgrid_contract._model import Strict as _Strict


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

    def digest(self) -> str:
        """A short stable fingerprint, so a result can be matched to the workload that asked."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
