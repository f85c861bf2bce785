"""The model card round trip (seed 001): a filled card in, a ModelQualification out, and the
card's "Firmus Verification Results" section filled back in from the verdict.

    modelgrid card import MODEL_CARD.md (--pvc CLAIM[:PATH] | --cache CLAIM:MODEL_ID
                          | --random-weights ARCH) [--name N] [-n NAMESPACE] [-o FILE]
    modelgrid card verify MODEL_CARD.md (--from mq/NAME [-n NAMESPACE]
                          | --result RESULT.json [--policy P.yaml] [--qualification Q.yaml])

Everything here is pure except the CLI functions (`run`, `main` and their helpers), which read
the card, result, policy and qualification files and write the manifest or the card; the
cluster is read only through the `get_qualification` callable the caller passes to `run`.

Decisions:

* The importer reads the card's Basic Model Information, Energy Efficiency Declaration,
  Model-to-Grid Tier Qualification, Testing Methodology and Developer Attestation sections.
  Every other section (Power Stability Analysis, Reproducibility, Firmus Verification Results,
  Additional Notes, Submission, ...) is ignored, placeholders and all.
* Required fields: Model Name, Average Power Consumption, Power Coefficient of Variation (CV),
  Target Tier, Average Input Tokens and Average Output Tokens. Every other field is optional: a
  placeholder (a value still in square brackets) there is the same as leaving it out.
* Problems are collected, never raised one at a time; `parse_card` raises one `CardError`
  carrying all of them, each with the card's 1-based line number.
* Mapping: the metrics are `spec.claims`; Target Tier is `spec.claims.targetTier` (the spec has
  the field, so no annotation is needed) and also the label `modelgrid.firmus.ai/target-tier`;
  Average Input/Output Tokens are `workload.inputTokens`/`workload.tokensPerSample`; Number of
  Samples is `workload.samples` (prompts per run); Batch Size is `workload.batchSize` (prompts
  per batch in one stream; concurrency stays the default 1); Temperature, Top-p and Prompt Type
  are the workload's. Hardware names the GPU: "H200" is `hardware.gpuProduct` NVIDIA-H200 (the
  operator's default), "H200 NVL" NVIDIA-H200-NVL, "H100" NVIDIA-H100-80GB-HBM3, and a leading
  "8x" is `hardware.gpuCount`; any other GPU is a problem.
* Sequence Length is the context each request used: it is not mapped (the prompt length is
  Average Input Tokens), but it must hold the prompt, so a Sequence Length below Average Input
  Tokens is a problem. It, Driver Version, CUDA Version, Test Duration and Hardware are kept as
  `modelgrid.firmus.ai/card-*` annotations.
* The CRD's rules that pydantic does not check (lengths, parameterCount's pattern, an email
  address, peak >= average, batch <= samples, signed not before tested) are checked on the card,
  so the manifest written is one the apiserver accepts.
* The Verification Date of a ModelQualification is its `status.completedAt`; a result file
  carries no timestamp, so `card verify --result` uses the date (UTC) the file was last
  modified, which is when the benchmark wrote it, and says so.
* A refused result (`--result`) fills the section as not verified with the reason, like a
  Failed qualification; a file that is not a result at all is bad input (exit 2, card untouched).
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from modelgrid_contract.reasons import Reason as WireReason
from modelgrid_contract.result import SCHEMA_FULL, BenchmarkResult, CompactResult
from modelgrid_contract.wire import ResultRejected, encode_compact
from modelgrid_contract.workload import PromptType, Workload
from modelgrid_operator.api import GROUP, VERSION, QualificationSpec, validation_message
from modelgrid_operator.cli import shipped_policy
from modelgrid_operator.policy import TierPolicySpec
from modelgrid_operator.render import VERIFIED_METRICS_HEAD
from modelgrid_operator.status import Phase
from modelgrid_operator.verdict import ClaimCheck, Verdict, evaluate, validate_result

API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelQualification"
SECTION_HEADING = "## Firmus Verification Results"
LABEL_MODEL_VERSION = f"{GROUP}/model-version"
LABEL_TARGET_TIER = f"{GROUP}/target-tier"
ANNOTATION_PREFIX = f"{GROUP}/card-"
#: The CRD's enum of spec.model.source.randomWeights.architecture (a drift test compares).
RANDOM_WEIGHTS_ARCHITECTURES = (
    "tiny-llama",
    "llama-3.2-1b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "mistral-7b",
    "qwen2.5-7b",
)
EXIT_OK, EXIT_BAD_INPUT = 0, 2

# --------------------------------------------------------------------------- problems


class ProblemKind(StrEnum):
    """What is wrong with a field of a card."""

    PLACEHOLDER = "placeholder"
    MISSING = "missing"
    INVALID = "invalid"
    UNKNOWN_FIELD = "unknown-field"
    DUPLICATE = "duplicate"
    REFUSED_BY_SPEC = "refused-by-spec"


class CardProblem(BaseModel):
    """One thing wrong with a card: where (1-based line), which field, and what to do."""

    model_config = ConfigDict(frozen=True)

    line: int
    field: str
    message: str
    kind: ProblemKind = ProblemKind.INVALID

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class CardError(Exception):
    """A card that cannot be imported; `problems` lists every problem found, in line order."""

    def __init__(self, problems: Sequence[CardProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line, p.field))
        super().__init__("; ".join(str(p) for p in self.problems))


class CardSectionError(ValueError):
    """The card has no (or more than one) Firmus Verification Results section to fill."""


class _Invalid(Exception):
    """A field's value is impossible; the message completes "<Field> ..."."""


# --------------------------------------------------------------------------- fields


class Section(StrEnum):
    """The card's `## ` sections the importer reads."""

    BASIC = "Basic Model Information"
    ENERGY = "Energy Efficiency Declaration"
    TIER = "Model-to-Grid Tier Qualification"
    TESTING = "Testing Methodology"
    ATTESTATION = "Developer Attestation"


class CardField(StrEnum):
    """A field of the card, by its label on the template."""

    MODEL_NAME = "Model Name"
    MODEL_VERSION = "Model Version"
    ARCHITECTURE = "Architecture"
    PARAMETER_COUNT = "Parameter Count"
    FRAMEWORK = "Framework"
    QUANTIZATION = "Quantization"
    AVG_POWER = "Average Power Consumption"
    PEAK_POWER = "Peak Power Consumption"
    POWER_CV = "Power Coefficient of Variation (CV)"
    JOULES_PER_TOKEN = "Joules per Token"
    TOKENS_PER_JOULE = "Tokens per Joule"
    TARGET_TIER = "Target Tier"
    SELF_DECLARED = "Self-Declared Qualification"
    VERIFICATION_STATUS = "Firmus Verification Status"
    HARDWARE = "Hardware"
    DRIVER_VERSION = "Driver Version"
    CUDA_VERSION = "CUDA Version"
    TEST_DURATION = "Test Duration"
    SAMPLES = "Number of Samples"
    BATCH_SIZE = "Batch Size"
    SEQUENCE_LENGTH = "Sequence Length"
    PROMPT_TYPE = "Prompt Type"
    INPUT_TOKENS = "Average Input Tokens"
    OUTPUT_TOKENS = "Average Output Tokens"
    TEMPERATURE = "Temperature"
    TOP_P = "Top-p"
    ORGANIZATION = "Developer Name/Organization"
    CONTACT_EMAIL = "Contact Email"
    DATE_TESTED = "Date Tested"
    ACCOUNT_ID = "Firmus Account ID"
    SIGNATURE = "Signature"
    SIGNED_DATE = "Date"
    DECLARATION = "Declaration"


class Declaration(StrEnum):
    """The attestation's `- [x]` declarations, by their name in spec.attestation.declarations."""

    ON_H200 = "onH200Infrastructure"
    FOLLOWS_METHODOLOGY = "followsMethodology"
    TYPICAL_WORKLOAD = "typicalWorkload"
    NO_MANIPULATION = "noManipulation"
    ACCEPTS_VERIFICATION = "acceptsVerification"


#: A word of each declaration's sentence on the template that tells it from the others.
_DECLARATION_WORDS = (
    ("h200", Declaration.ON_H200),
    ("methodology", Declaration.FOLLOWS_METHODOLOGY),
    ("typical", Declaration.TYPICAL_WORKLOAD),
    ("manipulation", Declaration.NO_MANIPULATION),
    ("verify", Declaration.ACCEPTS_VERIFICATION),
)

#: Control (Cc) and bidirectional-formatting characters, which the CRD refuses in free text.
_FORBIDDEN_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PARAMETER_COUNT = re.compile(r"[0-9]+(\.[0-9]+)?[KMBT]?")
_VERSION_NUMBER = re.compile(r"\d+(\.\d+){0,3}")
#: "1", "Tier 1", "tier-1", "Tier 1 - Low Variance", "Tier 1 (Low Variance)"
_TIER = re.compile(r"(?:tier\s*[-_]?\s*)?(\d+)(?:\s*[-–—:(].*)?", re.IGNORECASE)
_GPU_COUNT = re.compile(r"\s*(\d+)\s*[x×]\s*", re.IGNORECASE)
#: GPU names a card's Hardware may give, and the node label nvidia.com/gpu.product of each
#: (NVIDIA-H200 is the operator's default; the H100 label is the SXM part's, as in the sandbox).
_GPU_PRODUCTS = (
    (re.compile(r"\bH200\s*NVL\b", re.IGNORECASE), "NVIDIA-H200-NVL"),
    (re.compile(r"\bH200\b", re.IGNORECASE), "NVIDIA-H200"),
    (re.compile(r"\bH100\b", re.IGNORECASE), "NVIDIA-H100-80GB-HBM3"),
)
_PROMPT_TYPES = {
    "conversational": PromptType.CONVERSATIONAL,
    "conversation": PromptType.CONVERSATIONAL,
    "chat": PromptType.CONVERSATIONAL,
    "code": PromptType.CODE,
    "code generation": PromptType.CODE,
    "coding": PromptType.CODE,
    "translation": PromptType.TRANSLATION,
}


def _quote(value: str, limit: int = 80) -> str:
    """A value for a one-line message: quoted, shortened, control characters escaped."""
    short = value if len(value) <= limit else value[: limit - 1] + "…"
    return '"' + _FORBIDDEN_CHARS.sub(lambda m: f"\\u{ord(m.group()):04x}", short) + '"'


def _text(max_len: int) -> Callable[[str], object]:
    def parse(raw: str) -> object:
        if _FORBIDDEN_CHARS.search(raw):
            raise _Invalid("must not contain control or bidirectional-override characters")
        if len(raw) > max_len:
            raise _Invalid(f"must be at most {max_len} characters; it has {len(raw)}")
        return raw

    return parse


def _strip_unit(raw: str, units: Sequence[str]) -> str:
    for unit in units:
        if raw.casefold().endswith(unit.casefold()):
            return raw[: -len(unit)].strip()
    return raw


@dataclass(frozen=True)
class _Bounds:
    """A closed or half-open interval, in words for messages."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def holds(self, x: float) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def words(self) -> str:
        low = "greater than" if self.low_open else "at least"
        high = "below" if self.high_open else "at most"
        return f"{low} {self.low:g} and {high} {self.high:g}"


def _number(bounds: _Bounds, units: Sequence[str], example: str) -> Callable[[str], object]:
    def parse(raw: str) -> object:
        body = _strip_unit(raw, units)
        if not _NUMBER.fullmatch(body):
            raise _Invalid(f"must be a number like {example}; got {_quote(raw)}")
        value = float(body)
        if not bounds.holds(value):
            raise _Invalid(f"must be {bounds.words()}; got {_quote(raw)}")
        return value

    return parse


def _integer(bounds: _Bounds, units: Sequence[str], example: str) -> Callable[[str], object]:
    def parse(raw: str) -> object:
        body = _strip_unit(raw, units).replace(",", "")
        if not re.fullmatch(r"[+-]?\d+", body):
            raise _Invalid(f"must be a whole number like {example}; got {_quote(raw)}")
        value = int(body)
        if not bounds.holds(value):
            raise _Invalid(f"must be a whole number {bounds.words()}; got {_quote(raw)}")
        return value

    return parse


def _date(raw: str) -> object:
    try:
        if not _DATE.fullmatch(raw):
            raise ValueError(raw)
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise _Invalid(f"must be a date YYYY-MM-DD like 2025-12-13; got {_quote(raw)}") from None


def _email(raw: str) -> object:
    _text(254)(raw)
    if not _EMAIL.fullmatch(raw):
        raise _Invalid(f"must be an email address like energy@example.ai; got {_quote(raw)}")
    return raw


def _tier(raw: str) -> object:
    m = _TIER.fullmatch(raw.strip())
    if not m or not 1 <= int(m.group(1)) <= 10:
        raise _Invalid(f"must be a tier from 1 to 10, like Tier 1; got {_quote(raw)}")
    return int(m.group(1))


def _parameter_count(raw: str) -> object:
    value = raw.replace(" ", "").upper()
    if len(value) > 16 or not _PARAMETER_COUNT.fullmatch(value):
        raise _Invalid(
            f"must be a number with an optional K, M, B or T suffix, like 8B, 70B or 1.5B; "
            f"got {_quote(raw)}"
        )
    return value


def _version_number(raw: str) -> object:
    if not _VERSION_NUMBER.fullmatch(raw):
        raise _Invalid(f"must be a version number like 12.4 or 550.54.15; got {_quote(raw)}")
    return raw


def _prompt_type(raw: str) -> object:
    found = _PROMPT_TYPES.get(" ".join(raw.casefold().split()))
    if found is None:
        raise _Invalid(
            f"must be one of conversational, code generation or translation; got {_quote(raw)}"
        )
    return found


class CardHardware(BaseModel):
    """The card's Hardware: as written, and the GPU product label and count it names."""

    model_config = ConfigDict(frozen=True)

    description: str
    gpu_product: str
    gpu_count: int | None = None


def _hardware(raw: str) -> object:
    _text(256)(raw)
    count_match = _GPU_COUNT.match(raw)
    count = int(count_match.group(1)) if count_match else None
    if count is not None and not 1 <= count <= 8:
        raise _Invalid(f"names {count} GPUs; a qualification measures 1 to 8")
    for pattern, product in _GPU_PRODUCTS:
        if pattern.search(raw):
            return CardHardware(description=raw, gpu_product=product, gpu_count=count)
    raise _Invalid(f"must name the GPU measured on, an H200 (or H200 NVL, H100); got {_quote(raw)}")


def _ignored(raw: str) -> object:
    return raw


@dataclass(frozen=True)
class _FieldSpec:
    field: CardField
    section: Section
    #: the Card attribute, or None for a field the template has but the importer ignores
    attr: str | None
    parse: Callable[[str], object]
    required: bool = False


_WATTS = ("watts", "watt", "w")
_POWER = _Bounds(0, 10000, low_open=True)
_FIELDS = (
    _FieldSpec(CardField.MODEL_NAME, Section.BASIC, "model_name", _text(253), required=True),
    _FieldSpec(CardField.MODEL_VERSION, Section.BASIC, "model_version", _text(64)),
    _FieldSpec(CardField.ARCHITECTURE, Section.BASIC, "architecture", _text(64)),
    _FieldSpec(CardField.PARAMETER_COUNT, Section.BASIC, "parameter_count", _parameter_count),
    _FieldSpec(CardField.FRAMEWORK, Section.BASIC, "framework", _text(32)),
    _FieldSpec(CardField.QUANTIZATION, Section.BASIC, "quantization", _text(32)),
    _FieldSpec(
        CardField.AVG_POWER,
        Section.ENERGY,
        "avg_power_w",
        _number(_POWER, _WATTS, "142.3"),
        required=True,
    ),
    _FieldSpec(
        CardField.PEAK_POWER, Section.ENERGY, "peak_power_w", _number(_POWER, _WATTS, "165")
    ),
    _FieldSpec(
        CardField.POWER_CV,
        Section.ENERGY,
        "power_cv",
        _number(_Bounds(0, 1), (), "0.085"),
        required=True,
    ),
    _FieldSpec(
        CardField.JOULES_PER_TOKEN,
        Section.ENERGY,
        "joules_per_token",
        _number(_Bounds(0, 1000, low_open=True), ("j/token", "j"), "0.52"),
    ),
    _FieldSpec(
        CardField.TOKENS_PER_JOULE,
        Section.ENERGY,
        "tokens_per_joule",
        _number(_Bounds(0, 100000, low_open=True), ("tokens/j",), "1.92"),
    ),
    _FieldSpec(CardField.TARGET_TIER, Section.TIER, "target_tier", _tier, required=True),
    _FieldSpec(CardField.SELF_DECLARED, Section.TIER, None, _ignored),
    _FieldSpec(CardField.VERIFICATION_STATUS, Section.TIER, None, _ignored),
    _FieldSpec(CardField.HARDWARE, Section.TESTING, "hardware", _hardware),
    _FieldSpec(CardField.DRIVER_VERSION, Section.TESTING, "driver_version", _version_number),
    _FieldSpec(CardField.CUDA_VERSION, Section.TESTING, "cuda_version", _version_number),
    _FieldSpec(
        CardField.TEST_DURATION,
        Section.TESTING,
        "test_duration_min",
        _number(_Bounds(0, 10080, low_open=True), ("minutes", "minute", "min"), "30"),
    ),
    _FieldSpec(
        CardField.SAMPLES,
        Section.TESTING,
        "samples",
        _integer(_Bounds(1, 100_000), ("inference runs", "runs", "samples"), "20"),
    ),
    _FieldSpec(
        CardField.BATCH_SIZE, Section.TESTING, "batch_size", _integer(_Bounds(1, 1024), (), "4")
    ),
    _FieldSpec(
        CardField.SEQUENCE_LENGTH,
        Section.TESTING,
        "sequence_length_tokens",
        _integer(_Bounds(1, 1_048_576), ("tokens",), "2048"),
    ),
    _FieldSpec(CardField.PROMPT_TYPE, Section.TESTING, "prompt_type", _prompt_type),
    _FieldSpec(
        CardField.INPUT_TOKENS,
        Section.TESTING,
        "avg_input_tokens",
        _integer(_Bounds(1, 131_072), ("tokens",), "256"),
        required=True,
    ),
    _FieldSpec(
        CardField.OUTPUT_TOKENS,
        Section.TESTING,
        "avg_output_tokens",
        _integer(_Bounds(1, 32_768), ("tokens",), "128"),
        required=True,
    ),
    _FieldSpec(
        CardField.TEMPERATURE, Section.TESTING, "temperature", _number(_Bounds(0, 2), (), "0.7")
    ),
    _FieldSpec(
        CardField.TOP_P, Section.TESTING, "top_p", _number(_Bounds(0, 1, low_open=True), (), "0.9")
    ),
    _FieldSpec(CardField.ORGANIZATION, Section.ATTESTATION, "organization", _text(128)),
    _FieldSpec(CardField.CONTACT_EMAIL, Section.ATTESTATION, "contact_email", _email),
    _FieldSpec(CardField.DATE_TESTED, Section.ATTESTATION, "date_tested", _date),
    _FieldSpec(CardField.ACCOUNT_ID, Section.ATTESTATION, "account_id", _text(64)),
    _FieldSpec(CardField.SIGNATURE, Section.ATTESTATION, "signature", _text(128)),
    _FieldSpec(CardField.SIGNED_DATE, Section.ATTESTATION, "signed_date", _date),
)
_BY_SECTION: dict[Section, dict[str, _FieldSpec]] = {
    section: {s.field.value.casefold(): s for s in _FIELDS if s.section is section}
    for section in Section
}
_BY_FIELD = {s.field: s for s in _FIELDS}
_FIELD_OF_ATTR = {s.attr: s.field for s in _FIELDS if s.attr}


class Card(BaseModel):
    """A filled model card, as imported: every value checked; None where the card gives none.

    `lines` is where each field was read (1-based), so a later refusal can point at it.
    """

    # model_name is the card's word; pydantic before 2.10 reserves the model_ prefix
    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model_name: str
    model_version: str | None = None
    architecture: str | None = None
    parameter_count: str | None = None
    framework: str | None = None
    quantization: str | None = None
    avg_power_w: float
    peak_power_w: float | None = None
    power_cv: float
    joules_per_token: float | None = None
    tokens_per_joule: float | None = None
    target_tier: int
    hardware: CardHardware | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    test_duration_min: float | None = None
    samples: int | None = None
    batch_size: int | None = None
    sequence_length_tokens: int | None = None
    prompt_type: PromptType | None = None
    avg_input_tokens: int
    avg_output_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    organization: str | None = None
    contact_email: str | None = None
    date_tested: dt.date | None = None
    account_id: str | None = None
    signature: str | None = None
    signed_date: dt.date | None = None
    #: the declarations the card lists, and whether each is ticked
    declarations: dict[Declaration, bool] = {}
    lines: dict[CardField, int] = {}

    def values(self) -> dict[CardField, object]:
        """The card's fields by their label, None where not given."""
        return {field: getattr(self, attr) for attr, field in _FIELD_OF_ATTR.items()}


# --------------------------------------------------------------------------- reading a card


_HEADING = re.compile(r"(#{1,6})\s+(.*?)\s*#*\s*")
_LABEL = re.compile(r"\*\*(?P<label>[^*]+?)(?::\*\*|\*\*\s*:)\s*(?P<rest>.*)")
_CHECKBOX = re.compile(r"\s*[-*+]\s+\[(?P<mark>[ xX])\]\s+(?P<text>.*)")
_FENCE = re.compile(r"\s*(```|~~~)")
_SEPARATOR = re.compile(r"\s*-{3,}\s*")


@dataclass(frozen=True)
class _Entry:
    line: int
    section: Section
    label: str
    value: str


@dataclass(frozen=True)
class _Tick:
    line: int
    checked: bool
    text: str


@dataclass
class _Scan:
    entries: list[_Entry]
    ticks: list[_Tick]
    headings: dict[Section, int]


def _lines(text: str) -> list[str]:
    """The card's lines without their line ends (LF or CRLF), 1-based as index + 1."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _section_of(title: str) -> Section | None:
    wanted = " ".join(title.split()).casefold()
    return next((s for s in Section if s.value.casefold() == wanted), None)


def _value_of(rest: str) -> str:
    """The value after a bold label: the first `code span`, else the rest of the line."""
    rest = rest.strip()
    if rest.startswith("`"):
        end = rest.find("`", 1)
        if end > 0:
            return rest[1:end].strip()
    return rest


def _scan(text: str) -> _Scan:
    """Bold labels and declaration checkboxes in the sections the importer reads."""
    out = _Scan([], [], {})
    section: Section | None = None
    subsection = ""
    fenced = False
    for number, line in enumerate(_lines(text), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        heading = None if fenced else _HEADING.fullmatch(line)
        if heading:
            level, title = len(heading.group(1)), heading.group(2)
            if level <= 2:
                section = _section_of(title) if level == 2 else None
                subsection = ""
                if section is not None:
                    out.headings.setdefault(section, number)
            else:
                subsection = " ".join(title.split()).casefold()
            continue
        if fenced or section is None:
            continue
        label = _LABEL.match(line)
        if label:
            value = _value_of(label.group("rest"))
            out.entries.append(_Entry(number, section, label.group("label").strip(), value))
        tick = _CHECKBOX.fullmatch(line)
        if tick and section is Section.ATTESTATION and subsection == "declaration":
            out.ticks.append(_Tick(number, tick.group("mark") != " ", tick.group("text").strip()))
    return out


def _is_placeholder(value: str) -> bool:
    return value == "" or (value.startswith("[") and value.endswith("]"))


def _unknown_field(entry: _Entry) -> CardProblem:
    known = [s.field.value for s in _BY_SECTION[entry.section].values()]
    close = difflib.get_close_matches(entry.label, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else f" (the fields there: {', '.join(known)})"
    return CardProblem(
        line=entry.line,
        field=entry.label,
        kind=ProblemKind.UNKNOWN_FIELD,
        message=f"{_quote(entry.label)} is not a field of ## {entry.section.value}{hint}",
    )


def _collect(scan: _Scan) -> tuple[dict[CardField, _Entry], list[CardProblem]]:
    """Each known field's entry; unknown and duplicated fields are problems."""
    found: dict[CardField, _Entry] = {}
    problems: list[CardProblem] = []
    for entry in scan.entries:
        spec = _BY_SECTION[entry.section].get(" ".join(entry.label.split()).casefold())
        if spec is None:
            problems.append(_unknown_field(entry))
        elif spec.field in found:
            first = found[spec.field].line
            problems.append(
                CardProblem(
                    line=entry.line,
                    field=spec.field.value,
                    kind=ProblemKind.DUPLICATE,
                    message=f"{spec.field.value} is given twice (first on line {first}): keep one",
                )
            )
        else:
            found[spec.field] = entry
    return found, problems


def _missing(spec: _FieldSpec, headings: Mapping[Section, int]) -> CardProblem:
    where = headings.get(spec.section)
    return CardProblem(
        line=where or 1,
        field=spec.field.value,
        kind=ProblemKind.MISSING,
        message=f'{spec.field.value} is missing: add "**{spec.field.value}:** `...`" under '
        f"## {spec.section.value}" + ("" if where else " (the card has no such section)"),
    )


def _convert(
    found: Mapping[CardField, _Entry], headings: Mapping[Section, int]
) -> tuple[dict[CardField, object], list[CardProblem]]:
    """Every field's value, parsed; placeholders of required fields and impossible values
    are problems, placeholders of optional ones are left out."""
    values: dict[CardField, object] = {}
    problems: list[CardProblem] = []
    for spec in _FIELDS:
        entry = found.get(spec.field)
        if spec.attr is None:
            continue
        if entry is None:
            if spec.required:
                problems.append(_missing(spec, headings))
            continue
        if _is_placeholder(entry.value):
            if spec.required:
                problems.append(_placeholder(spec, entry))
            continue
        try:
            values[spec.field] = spec.parse(entry.value)
        except _Invalid as exc:
            problems.append(
                CardProblem(
                    line=entry.line, field=spec.field.value, message=f"{spec.field.value} {exc}"
                )
            )
    return values, problems


def _placeholder(spec: _FieldSpec, entry: _Entry) -> CardProblem:
    if entry.value == "":
        message = f"{spec.field.value} is empty: fill it in"
    else:
        message = (
            f"{spec.field.value} is still the template's placeholder {_quote(entry.value)}: "
            "fill it in"
        )
    return CardProblem(
        line=entry.line, field=spec.field.value, kind=ProblemKind.PLACEHOLDER, message=message
    )


def _declarations(
    ticks: Sequence[_Tick],
) -> tuple[dict[Declaration, bool], dict[Declaration, int], list[CardProblem]]:
    """The declarations listed, ticked or not, and their lines; an unknown or repeated one
    is a problem."""
    listed: dict[Declaration, bool] = {}
    lines: dict[Declaration, int] = {}
    problems: list[CardProblem] = []
    for tick in ticks:
        words = tick.text.casefold()
        which = next((d for word, d in _DECLARATION_WORDS if word in words), None)
        if which is None or which in listed:
            why = (
                "is not one of the template's five declarations"
                if which is None
                else f"repeats the declaration on line {lines[which]}"
            )
            problems.append(
                CardProblem(
                    line=tick.line,
                    field=CardField.DECLARATION.value,
                    kind=ProblemKind.UNKNOWN_FIELD if which is None else ProblemKind.DUPLICATE,
                    message=f"the declaration {_quote(tick.text)} {why}",
                )
            )
            continue
        listed[which], lines[which] = tick.checked, tick.line
    return listed, lines, problems


# --------------------------------------------------------------------------- cross-field rules


def _num(values: Mapping[CardField, object], field: CardField) -> float | None:
    value = values.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _at(lines: Mapping[CardField, int], field: CardField) -> int:
    return lines.get(field, 1)


_Check = Callable[[Mapping[CardField, object], Mapping[CardField, int]], CardProblem | None]


def _peak_below_average(
    values: Mapping[CardField, object], lines: Mapping[CardField, int]
) -> CardProblem | None:
    avg, peak = _num(values, CardField.AVG_POWER), _num(values, CardField.PEAK_POWER)
    if avg is None or peak is None or peak >= avg:
        return None
    return CardProblem(
        line=_at(lines, CardField.PEAK_POWER),
        field=CardField.PEAK_POWER.value,
        message=f"Peak Power Consumption ({peak:g} W) is below the Average Power Consumption "
        f"({avg:g} W, line {_at(lines, CardField.AVG_POWER)}): a peak cannot be below the "
        "average",
    )


#: Joules per Token and Tokens per Joule are each other's inverse; they may disagree by this.
EFFICIENCY_CONSISTENCY = 0.10


def _efficiency_contradiction(
    values: Mapping[CardField, object], lines: Mapping[CardField, int]
) -> CardProblem | None:
    jpt, tpj = _num(values, CardField.JOULES_PER_TOKEN), _num(values, CardField.TOKENS_PER_JOULE)
    if jpt is None or tpj is None or abs(jpt * tpj - 1.0) <= EFFICIENCY_CONSISTENCY:
        return None
    return CardProblem(
        line=_at(lines, CardField.TOKENS_PER_JOULE),
        field=CardField.TOKENS_PER_JOULE.value,
        message=f"Tokens per Joule ({tpj:g}) contradicts Joules per Token ({jpt:g}, line "
        f"{_at(lines, CardField.JOULES_PER_TOKEN)}): one is the inverse of the other, and "
        f"1 / {jpt:g} = {1 / jpt:.4g}",
    )


#: The benchmark's prompts per run when the card gives no Number of Samples.
DEFAULT_SAMPLES = Workload().samples


def _batch_over_samples(
    values: Mapping[CardField, object], lines: Mapping[CardField, int]
) -> CardProblem | None:
    batch, samples = _num(values, CardField.BATCH_SIZE), _num(values, CardField.SAMPLES)
    limit = samples if samples is not None else float(DEFAULT_SAMPLES)
    if batch is None or batch <= limit:
        return None
    given = (
        f"the Number of Samples ({limit:g}, line {_at(lines, CardField.SAMPLES)})"
        if samples is not None
        else f"the {DEFAULT_SAMPLES} prompts a run has when the card gives no Number of Samples"
    )
    return CardProblem(
        line=_at(lines, CardField.BATCH_SIZE),
        field=CardField.BATCH_SIZE.value,
        message=f"Batch Size ({batch:g}) exceeds {given}: a batch cannot hold more prompts "
        "than a run sends",
    )


def _sequence_too_short(
    values: Mapping[CardField, object], lines: Mapping[CardField, int]
) -> CardProblem | None:
    seq, prompt = _num(values, CardField.SEQUENCE_LENGTH), _num(values, CardField.INPUT_TOKENS)
    if seq is None or prompt is None or seq >= prompt:
        return None
    return CardProblem(
        line=_at(lines, CardField.SEQUENCE_LENGTH),
        field=CardField.SEQUENCE_LENGTH.value,
        message=f"Sequence Length ({seq:g} tokens) is shorter than the Average Input Tokens "
        f"({prompt:g}, line {_at(lines, CardField.INPUT_TOKENS)}): a sequence must hold its "
        "prompt",
    )


def _signed_before_tested(
    values: Mapping[CardField, object], lines: Mapping[CardField, int]
) -> CardProblem | None:
    tested, signed = values.get(CardField.DATE_TESTED), values.get(CardField.SIGNED_DATE)
    if not isinstance(tested, dt.date) or not isinstance(signed, dt.date) or signed >= tested:
        return None
    return CardProblem(
        line=_at(lines, CardField.SIGNED_DATE),
        field=CardField.SIGNED_DATE.value,
        message=f"Date ({signed.isoformat()}) is before the Date Tested ({tested.isoformat()}, "
        f"line {_at(lines, CardField.DATE_TESTED)}): the attestation is signed after testing",
    )


_CROSS_CHECKS: tuple[_Check, ...] = (
    _peak_below_average,
    _efficiency_contradiction,
    _batch_over_samples,
    _sequence_too_short,
    _signed_before_tested,
)


def _cross_problems(
    values: Mapping[CardField, object], lines: Mapping[CardField, int]
) -> list[CardProblem]:
    return [p for check in _CROSS_CHECKS if (p := check(values, lines)) is not None]


def parse_card(text: str) -> Card:
    """Read a filled model card (the template's format, LF or CRLF line ends).

    Raises `CardError` with every problem found: a required field missing or still a
    placeholder, an impossible value, an unknown or duplicated field in the sections read.
    """
    scan = _scan(text)
    found, problems = _collect(scan)
    values, invalid = _convert(found, scan.headings)
    declared, declared_at, undeclared = _declarations(scan.ticks)
    lines = {field: entry.line for field, entry in found.items()}
    if declared_at:
        lines[CardField.DECLARATION] = min(declared_at.values())
    problems += invalid + undeclared + _cross_problems(values, lines)
    if problems:
        raise CardError(problems)
    body: dict[str, object] = {str(_BY_FIELD[f].attr): v for f, v in values.items()}
    return Card.model_validate({**body, "declarations": declared, "lines": lines})


# --------------------------------------------------------------------------- the manifest

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_MODEL_ID = re.compile(
    r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9_])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,94}[A-Za-z0-9_])?"
)


def dns_label(text: str) -> str:
    """A DNS-1123 label (a Kubernetes object name) made from a model name:
    'meta-llama/Llama-3.1-8B' -> 'meta-llama-llama-3-1-8b'."""
    label = re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-")[:63].rstrip("-")
    return label or "model"


def name_problem(name: str, what: str = "name") -> str | None:
    """Why `name` cannot be a ModelQualification's name (a DNS-1123 subdomain), or None."""
    if len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name):
        return None
    return (
        f"{what} {_quote(name)} must be lowercase letters, digits, - and ., starting and ending "
        "with a letter or digit, at most 253 characters, like my-custom-llama-70b"
    )


def namespace_problem(namespace: str) -> str | None:
    """Why `namespace` cannot be a namespace's name (a DNS-1123 label), or None."""
    if _DNS_LABEL.fullmatch(namespace):
        return None
    return (
        f"namespace {_quote(namespace)} must be lowercase letters, digits and -, starting and "
        "ending with a letter or digit, at most 63 characters"
    )


def _pvc_problems(pvc: Mapping[str, Any], where: str) -> list[str]:
    out = []
    claim = pvc.get("claimName")
    if not isinstance(claim, str) or name_problem(claim) is not None:
        out.append(f"{where}.claimName {_quote(str(claim))} is not a PersistentVolumeClaim name")
    path = pvc.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
        out.append(f"{where}.path {_quote(str(path))} must be an absolute path without '..'")
    elif len(path) > 1024 or _FORBIDDEN_CHARS.search(path):
        out.append(f"{where}.path must be at most 1024 characters, without control characters")
    return out


def _cache_problems(cache: Mapping[str, Any], where: str) -> list[str]:
    out = _pvc_problems({"claimName": cache.get("claimName")}, where)
    model_id = cache.get("modelId")
    if (
        not isinstance(model_id, str)
        or len(model_id) > 256
        or not _MODEL_ID.fullmatch(model_id)
        or ".." in model_id
        or "--" in model_id
    ):
        out.append(
            f"{where}.modelId {_quote(str(model_id))} must be a Hugging Face repo id like org/name"
        )
    return out


def source_problems(source: Mapping[str, Any]) -> list[str]:
    """What is wrong with a `spec.model.source` the caller gives, by the CRD's rules (exactly
    one member; claim names, paths, model ids and architectures as the apiserver checks
    them); empty when nothing is. Endpoint and server sources are checked by the spec."""
    if len(source) != 1:
        return [
            "the model source must set exactly one of pvc, cache, server, endpoint or "
            f"randomWeights; it sets {', '.join(source) or 'none'}"
        ]
    ((kind, body),) = source.items()
    if not isinstance(body, Mapping):
        return [f"source.{kind} must be an object"]
    if kind == "pvc":
        return _pvc_problems(body, "pvc")
    if kind == "cache":
        return _cache_problems(body, "cache")
    if kind == "randomWeights" and body.get("architecture") not in RANDOM_WEIGHTS_ARCHITECTURES:
        return [
            f"randomWeights.architecture {_quote(str(body.get('architecture')))} must be one of "
            + ", ".join(RANDOM_WEIGHTS_ARCHITECTURES)
        ]
    if kind not in ("pvc", "cache", "randomWeights", "server", "endpoint"):
        return [
            f"{_quote(kind)} is not a model source (pvc, cache, server, endpoint, randomWeights)"
        ]
    return []


def _drop_none(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _model_spec(card: Card, source: Mapping[str, Any]) -> dict[str, Any]:
    return _drop_none(
        {
            "name": card.model_name,
            "version": card.model_version,
            "architecture": card.architecture,
            "parameterCount": card.parameter_count,
            "framework": card.framework,
            "quantization": card.quantization,
            "source": dict(source),
        }
    )


def _claims_spec(card: Card) -> dict[str, Any]:
    return _drop_none(
        {
            "avgPowerW": card.avg_power_w,
            "peakPowerW": card.peak_power_w,
            "powerCV": card.power_cv,
            "joulesPerToken": card.joules_per_token,
            "tokensPerJoule": card.tokens_per_joule,
            "targetTier": card.target_tier,
        }
    )


def _workload_spec(card: Card) -> dict[str, Any]:
    return _drop_none(
        {
            "samples": card.samples,
            "tokensPerSample": card.avg_output_tokens,
            "batchSize": card.batch_size,
            "inputTokens": card.avg_input_tokens,
            "temperature": card.temperature,
            "topP": card.top_p,
            "promptType": card.prompt_type.value if card.prompt_type else None,
        }
    )


def _attestation_spec(card: Card) -> dict[str, Any] | None:
    given = _drop_none(
        {
            "organization": card.organization,
            "contact": card.contact_email,
            "dateTested": card.date_tested.isoformat() if card.date_tested else None,
            "accountId": card.account_id,
            "signature": card.signature,
            "signedDate": card.signed_date.isoformat() if card.signed_date else None,
        }
    )
    if not given and not card.declarations:
        return None
    return {
        **given,
        "declarations": {d.value: card.declarations.get(d, False) for d in Declaration},
    }


def _spec_of(card: Card, source: Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": _model_spec(card, source),
        "claims": _claims_spec(card),
        "workload": _workload_spec(card),
    }
    if card.hardware is not None:
        spec["hardware"] = _drop_none(
            {"gpuProduct": card.hardware.gpu_product, "gpuCount": card.hardware.gpu_count}
        )
    attestation = _attestation_spec(card)
    if attestation is not None:
        spec["attestation"] = attestation
    return spec


#: Where each spec field came from on the card, so a refusal points at its line.
_SPEC_FIELDS: dict[tuple[str, str], CardField] = {
    ("model", "name"): CardField.MODEL_NAME,
    ("model", "version"): CardField.MODEL_VERSION,
    ("model", "architecture"): CardField.ARCHITECTURE,
    ("model", "parameterCount"): CardField.PARAMETER_COUNT,
    ("model", "framework"): CardField.FRAMEWORK,
    ("model", "quantization"): CardField.QUANTIZATION,
    ("claims", "avgPowerW"): CardField.AVG_POWER,
    ("claims", "peakPowerW"): CardField.PEAK_POWER,
    ("claims", "powerCV"): CardField.POWER_CV,
    ("claims", "joulesPerToken"): CardField.JOULES_PER_TOKEN,
    ("claims", "tokensPerJoule"): CardField.TOKENS_PER_JOULE,
    ("claims", "targetTier"): CardField.TARGET_TIER,
    ("workload", "samples"): CardField.SAMPLES,
    ("workload", "tokensPerSample"): CardField.OUTPUT_TOKENS,
    ("workload", "batchSize"): CardField.BATCH_SIZE,
    ("workload", "inputTokens"): CardField.INPUT_TOKENS,
    ("workload", "temperature"): CardField.TEMPERATURE,
    ("workload", "topP"): CardField.TOP_P,
    ("workload", "promptType"): CardField.PROMPT_TYPE,
    ("hardware", "gpuProduct"): CardField.HARDWARE,
    ("hardware", "gpuCount"): CardField.HARDWARE,
    ("attestation", "organization"): CardField.ORGANIZATION,
    ("attestation", "contact"): CardField.CONTACT_EMAIL,
    ("attestation", "dateTested"): CardField.DATE_TESTED,
    ("attestation", "accountId"): CardField.ACCOUNT_ID,
    ("attestation", "signature"): CardField.SIGNATURE,
    ("attestation", "signedDate"): CardField.SIGNED_DATE,
    ("attestation", "declarations"): CardField.DECLARATION,
}
#: A rule over a whole part of the spec points at that part's first field on the card.
_PART_FIELDS = {
    "model": CardField.MODEL_NAME,
    "claims": CardField.AVG_POWER,
    "workload": CardField.INPUT_TOKENS,
    "hardware": CardField.HARDWARE,
    "attestation": CardField.ORGANIZATION,
}


def _spec_problems(spec: Mapping[str, Any], card: Card) -> list[CardProblem]:
    """The spec's refusals of what the card said, each at the line of the field it came from.
    A refusal of the caller's source is a ValueError: it is not the card's."""
    try:
        QualificationSpec.model_validate(spec)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(str(x) for x in err["loc"])
            if loc[:2] == ("model", "source"):
                raise ValueError(f"invalid model source: {validation_message(exc)}") from exc
            pair = (loc[0], loc[1]) if len(loc) >= 2 else None
            field = (_SPEC_FIELDS.get(pair) if pair else None) or _PART_FIELDS.get(
                loc[0] if loc else ""
            )
            field = field or CardField.MODEL_NAME
            problems.append(
                CardProblem(
                    line=card.lines.get(field, 1),
                    field=field.value,
                    kind=ProblemKind.REFUSED_BY_SPEC,
                    message=f"{field.value} is refused by the ModelQualification spec "
                    f"({'.'.join(loc)}): {err['msg']}",
                )
            )
        return problems
    return []


def _labels(card: Card) -> dict[str, str]:
    labels = {LABEL_TARGET_TIER: str(card.target_tier)}
    version = card.model_version
    if version and len(version) <= 63 and _LABEL_VALUE.fullmatch(version):
        labels[LABEL_MODEL_VERSION] = version
    return labels


def _annotations(card: Card) -> dict[str, str]:
    notes = {
        "hardware": card.hardware.description if card.hardware else None,
        "driver-version": card.driver_version,
        "cuda-version": card.cuda_version,
        "test-duration-minutes": (
            f"{card.test_duration_min:g}" if card.test_duration_min is not None else None
        ),
        "sequence-length-tokens": (
            str(card.sequence_length_tokens) if card.sequence_length_tokens is not None else None
        ),
    }
    return {ANNOTATION_PREFIX + k: v for k, v in notes.items() if v is not None}


def card_to_qualification(
    card: Card,
    *,
    name: str | None = None,
    namespace: str | None = None,
    source: Mapping[str, Any],
) -> dict[str, Any]:
    """The ModelQualification manifest a card declares, with the caller's model `source`
    (the card does not say where the weights are). Its name is `name` or a DNS-1123 label
    made from the model name.

    Raises `CardError` for what the spec or the CRD's rules refuse of the card (each problem
    at the line of the field it came from), ValueError for a bad name, namespace or source.
    """
    caller = [
        problem
        for problem in (
            name_problem(name) if name is not None else None,
            namespace_problem(namespace) if namespace is not None else None,
            *source_problems(source),
        )
        if problem
    ]
    if caller:
        raise ValueError("; ".join(caller))
    spec = _spec_of(card, source)
    problems = _cross_problems(card.values(), card.lines) + _spec_problems(spec, card)
    if problems:
        raise CardError(problems)
    metadata: dict[str, Any] = {"name": name or dns_label(card.model_name)}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = _labels(card)
    annotations = _annotations(card)
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


# --------------------------------------------------------------------------- verification facts


class Metric(StrEnum):
    """A row of the Verified Metrics table, by the metric's name in status.verification."""

    AVG_POWER_W = "avgPowerW"
    POWER_CV = "powerCV"
    JOULES_PER_TOKEN = "joulesPerToken"
    PEAK_POWER_W = "peakPowerW"
    TOKENS_PER_JOULE = "tokensPerJoule"


_METRIC_LABELS = {
    Metric.AVG_POWER_W: "Avg Power (W)",
    Metric.POWER_CV: "CV",
    Metric.JOULES_PER_TOKEN: "J/token",
    Metric.PEAK_POWER_W: "Peak Power (W)",
    Metric.TOKENS_PER_JOULE: "Tokens/J",
}
#: Rows shown only when the developer claimed them (the template's table has the others).
_ROWS_WHEN_CLAIMED = frozenset({Metric.PEAK_POWER_W, Metric.TOKENS_PER_JOULE})


class MetricRow(BaseModel):
    """One row of the table: what was claimed, what was measured, the delta and its check."""

    model_config = ConfigDict(frozen=True)

    metric: Metric
    claimed: float | None = None
    measured: float | None = None
    delta_percent: float | None = None
    within_tolerance: bool | None = None


class VerificationFacts(BaseModel):
    """Everything the card's "Firmus Verification Results" section says.

    `verified` is False for anything but a verdict (a qualification not Succeeded, a refused
    result, a rerun asked for): such facts never carry a tier or an approved discount.
    """

    model_config = ConfigDict(frozen=True)

    verified: bool
    origin: str
    #: Verified | Failed | NoClaims (the claims' check) when verified; the phase otherwise
    status: str
    reason: str | None = None
    message: str | None = None
    verification_date: dt.date | None = None
    date_note: str | None = None
    verified_by: str
    method: str
    samples_tested: str | None = None
    rows: tuple[MetricRow, ...] = ()
    tier_label: str | None = None
    discount_approved: bool = False
    discount_percent: float = 0.0
    reasoning: str = ""
    notes: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _no_tier_without_a_verdict(self) -> VerificationFacts:
        if not self.verified and (self.tier_label is not None or self.discount_approved):
            raise ValueError("facts that are not a verdict carry no tier and no discount")
        return self


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _date_of(timestamp: object) -> dt.date | None:
    if not isinstance(timestamp, str):
        return None
    try:
        return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone(dt.UTC).date()
    except ValueError:
        return None


def _one_line(text: object) -> str:
    return " ".join(str(text).split()).replace("`", "'")


def _claimed_rows(claims: Mapping[str, Any]) -> tuple[MetricRow, ...]:
    return tuple(MetricRow(metric=m, claimed=_float(claims.get(m.value))) for m in Metric)


def _status_rows(status: Mapping[str, Any]) -> tuple[MetricRow, ...]:
    checks = [_mapping(c) for c in _mapping(status.get("verification")).get("claims") or []]
    by_metric = {c.get("metric"): c for c in checks}
    measured = _mapping(status.get("measured"))
    rows = []
    for metric in Metric:
        c = by_metric.get(metric.value)
        if c is None:
            rows.append(MetricRow(metric=metric, measured=_float(measured.get(metric.value))))
            continue
        within = c.get("withinTolerance")
        rows.append(
            MetricRow(
                metric=metric,
                claimed=_float(c.get("claimed")),
                measured=_float(c.get("measured")),
                delta_percent=_float(c.get("deltaPercent")),
                within_tolerance=within if isinstance(within, bool) else None,
            )
        )
    return tuple(rows)


def _condition(status: Mapping[str, Any], ctype: str) -> Mapping[str, Any]:
    for c in status.get("conditions") or []:
        if _mapping(c).get("type") == ctype:
            return _mapping(c)
    return {}


def _why_not(status: Mapping[str, Any], phase: str) -> tuple[str, str]:
    """The reason and message of a qualification without a verdict, from its conditions."""
    stalled = _condition(status, "Stalled")
    for c in (stalled if stalled.get("status") == "True" else {}, _condition(status, "Ready")):
        if c.get("reason"):
            return _one_line(c["reason"]), _one_line(c.get("message") or "") or "no message"
    return phase, "the operator has not reported a verdict yet"


def _method(measured: Mapping[str, Any], simulated: bool) -> str:
    scale, interval = (
        _float(measured.get("cvTimeScaleSeconds")),
        _float(measured.get("sampleIntervalSeconds")),
    )
    text = "modelgrid benchmark: NVML energy counter"
    if scale is not None:
        text += f", power CV over {scale:g} s windows"
    if interval is not None:
        text += f", {interval * 1000:g} ms sampling"
    return text + ("; simulated power" if simulated else "")


def _samples_text(tokens: object, duration_s: float | None, gpu_count: object, gpu: object) -> str:
    text = f"`{tokens}` output tokens" if isinstance(tokens, int) else "`unknown` output tokens"
    if duration_s is not None:
        text += f" over {duration_s:g} s"
    if gpu:
        text += f" on {gpu_count if isinstance(gpu_count, int) else 1} x {_one_line(gpu)}"
    return text


def facts_from_status(cr: Mapping[str, Any]) -> VerificationFacts:
    """The facts of a ModelQualification custom resource (as the API serves it), read from its
    status. Only a Succeeded qualification is verified; any other (Pending, Running, Failed,
    refused) is not, with its reason and message. The date is status.completedAt."""
    meta, status = _mapping(cr.get("metadata")), _mapping(cr.get("status"))
    origin = f"ModelQualification {meta.get('namespace') or 'default'}/{meta.get('name', '?')}"
    policy = _mapping(status.get("policy")).get("name")
    verified_by = "modelgrid operator" + (f" (TierPolicy {_one_line(policy)})" if policy else "")
    phase = _one_line(status.get("phase") or Phase.PENDING.value)
    ready = _condition(status, "Ready")
    generation = meta.get("generation")
    stands = (
        phase == Phase.SUCCEEDED.value
        and ready.get("status") == "True"
        and (generation is None or status.get("observedGeneration") == generation)
    )
    if not stands:
        # not Succeeded, or a verdict that no longer stands: the spec changed since it was
        # measured, or its policy went missing (Ready False)
        stale = phase == Phase.SUCCEEDED.value and status.get("observedGeneration") != generation
        reason, message = (
            (
                "Superseded",
                f"the spec is at generation {generation}, the verdict is for generation "
                f"{status.get('observedGeneration')}: the new spec is not measured yet",
            )
            if stale
            else _why_not(status, phase)
        )
        return VerificationFacts(
            verified=False,
            origin=origin,
            status=phase,
            reason=reason,
            message=message,
            verification_date=_date_of(status.get("completedAt")),
            verified_by=verified_by,
            method="modelgrid benchmark (no measurement was priced)",
            rows=_claimed_rows(_mapping(_mapping(cr.get("spec")).get("claims"))),
            reasoning=f"Not verified: {reason}: {message}",
        )
    measured, env = _mapping(status.get("measured")), _mapping(status.get("environment"))
    tier = _mapping(status.get("tier"))
    approved = status.get("discountApproved") is True
    return VerificationFacts(
        verified=True,
        origin=origin,
        status=_one_line(_mapping(status.get("verification")).get("result") or "NoClaims"),
        verification_date=_date_of(status.get("completedAt")),
        verified_by=verified_by,
        method=_method(measured, env.get("simulated") is True),
        samples_tested=_samples_text(
            measured.get("outputTokens"),
            _float(measured.get("durationSeconds")),
            env.get("gpuCount"),
            env.get("gpu"),
        ),
        rows=_status_rows(status),
        tier_label=_one_line(tier.get("label") or tier.get("name")) if tier else None,
        discount_approved=approved,
        discount_percent=(_float(status.get("discountPercent")) or 0.0) if approved else 0.0,
        reasoning=_one_line(status.get("reasoning") or ""),
    )


IDENTITY_NOTE = (
    "No qualification given: GPU product, GPU count and workload digest were not checked."
)


def _verdict_rows(result: CompactResult, verdict: Verdict) -> tuple[MetricRow, ...]:
    checks: dict[str, ClaimCheck] = {c.metric: c for c in verdict.claims}
    measured = {
        Metric.AVG_POWER_W: result.avg_power_watts,
        Metric.POWER_CV: verdict.cv,
        Metric.JOULES_PER_TOKEN: result.joules_per_token,
        Metric.PEAK_POWER_W: result.peak_power_watts,
        Metric.TOKENS_PER_JOULE: result.tokens_per_joule,
    }
    rows = []
    for metric in Metric:
        c = checks.get(metric.value)
        if c is None:
            rows.append(MetricRow(metric=metric, measured=measured[metric]))
            continue
        rows.append(
            MetricRow(
                metric=metric,
                claimed=c.claimed,
                measured=c.measured,
                delta_percent=round(c.delta_percent, 3),
                within_tolerance=c.within_tolerance,
            )
        )
    return tuple(rows)


def facts_from_verdict(
    result: CompactResult,
    verdict: Verdict,
    policy_name: str,
    *,
    verification_date: dt.date | None = None,
    date_note: str | None = None,
    identity_checked: bool = True,
    origin: str = "a benchmark result",
) -> VerificationFacts:
    """The facts of the operator's verdict on a validated result (`validate_result` then
    `evaluate`, as `modelgrid verdict` does). A result carries no timestamp: the caller gives
    the date (None renders "not recorded"). A verdict that asks for a rerun is not verified."""
    verified_by = f"modelgrid card verify (TierPolicy {_one_line(policy_name)})"
    method = _method(
        {
            "cvTimeScaleSeconds": result.cv_time_scale_s,
            "sampleIntervalSeconds": result.sample_interval_s,
        },
        result.simulated,
    )
    common: dict[str, Any] = {
        "origin": origin,
        "verification_date": verification_date,
        "date_note": date_note,
        "verified_by": verified_by,
        "method": method,
        "samples_tested": _samples_text(
            result.output_tokens, result.duration_s, result.gpu.count, result.gpu.name
        ),
        "rows": _verdict_rows(result, verdict),
        "notes": () if identity_checked else (IDENTITY_NOTE,),
    }
    if verdict.rerun_requested:
        reason, message = "BorderlineRerun", _one_line(verdict.reasoning)
        return VerificationFacts(
            verified=False,
            status="Rerun",
            reason=reason,
            message=message,
            reasoning=f"Not verified: {reason}: {message}",
            **common,
        )
    tier = verdict.tier
    return VerificationFacts(
        verified=True,
        status=verdict.verification,
        tier_label=(tier.label or tier.name) if tier else None,
        discount_approved=verdict.discount_approved,
        discount_percent=verdict.discount_percent if verdict.discount_approved else 0.0,
        reasoning=_one_line(verdict.reasoning),
        **common,
    )


def facts_from_refusal(
    exc: ResultRejected,
    claims: Mapping[str, Any],
    policy_name: str,
    *,
    verification_date: dt.date | None = None,
    date_note: str | None = None,
    origin: str = "a benchmark result",
) -> VerificationFacts:
    """The facts of a result the operator's checks refused: not verified, with the reason."""
    message = _one_line(exc.message)
    return VerificationFacts(
        verified=False,
        origin=origin,
        status="Refused",
        reason=exc.reason,
        message=message,
        verification_date=verification_date,
        date_note=date_note,
        verified_by=f"modelgrid card verify (TierPolicy {_one_line(policy_name)})",
        method="modelgrid benchmark (the result was refused, so nothing was priced)",
        rows=_claimed_rows(claims),
        reasoning=f"Not verified: {exc.reason}: {message}",
    )


# --------------------------------------------------------------------------- rendering


def _cell(x: float | None) -> str:
    return "—" if x is None else f"`{x:.6g}`"


def _row(row: MetricRow) -> str:
    delta = "—" if row.delta_percent is None else f"`{row.delta_percent:+.2f}%`"
    mark = {True: "✓", False: "✗", None: "—"}[row.within_tolerance]
    return (
        f"| {_METRIC_LABELS[row.metric]} | {_cell(row.claimed)} | {_cell(row.measured)} | "
        f"{delta} | {mark} |"
    )


def _table_rows(rows: Sequence[MetricRow]) -> list[str]:
    by_metric = {r.metric: r for r in rows}
    out = []
    for metric in Metric:
        row = by_metric.get(metric, MetricRow(metric=metric))
        if metric in _ROWS_WHEN_CLAIMED and row.claimed is None:
            continue
        out.append(_row(row))
    return out


_CLAIMS_WORDS = {
    "Verified": "every claim within tolerance",
    "Failed": "claims outside tolerance",
    "NoClaims": "nothing claimed",
}


#: Phases of a qualification still on its way to a verdict.
_IN_PROGRESS = frozenset({Phase.PENDING, Phase.QUEUED, Phase.SCHEDULING, Phase.RUNNING})


def _status_line(facts: VerificationFacts) -> str:
    """The template's words (Pending / Verified / Failed), then why."""
    if facts.verified:
        word = "Failed" if facts.status == "Failed" else "Verified"
        words = _CLAIMS_WORDS.get(facts.status, facts.status)
        return f"**Verification Status:** `{word}` ({words})  "
    word = "Pending" if facts.status in _IN_PROGRESS else "Not verified"
    return (
        f"**Verification Status:** `{word}` ({_one_line(facts.status)}, "
        f"{_one_line(facts.reason or 'no reason')}): {_one_line(facts.message or '')}  "
    )


def _date_line(facts: VerificationFacts) -> str:
    if facts.verification_date is None:
        when = "`not verified`" if not facts.verified else "`not recorded`"
    else:
        when = f"`{facts.verification_date.isoformat()}`"
    note = f" ({_one_line(facts.date_note)})" if facts.date_note else ""
    return f"**Verification Date:** {when}{note}  "


def render_verification(facts: VerificationFacts) -> str:
    """The card's "## Firmus Verification Results" section for `facts`, with the template's
    headings, fields and table (LF line ends; `fill_verification` adapts them)."""
    discount = (
        f"`Yes` ({facts.discount_percent:g}%)"
        if facts.verified and facts.discount_approved
        else "`No`"
    )
    tier = f"`{facts.tier_label}`" if facts.verified and facts.tier_label else "`none`"
    lines = [
        SECTION_HEADING,
        "",
        f"*Filled in by modelgrid from {_one_line(facts.origin)}*",
        "",
        _status_line(facts),
        _date_line(facts),
        f"**Verified By:** {_one_line(facts.verified_by)}  ",
        f"**Verification Method:** {_one_line(facts.method)}  ",
        f"**Samples Tested:** {facts.samples_tested or '`none`'}",
        "",
        *VERIFIED_METRICS_HEAD,
        *_table_rows(facts.rows),
        "",
        f"**Final Qualification:** {tier}  ",
        f"**Discount Approved:** {discount}  ",
        f"**Reasoning:** {_one_line(facts.reasoning) or '—'}",
    ]
    for note in facts.notes:
        lines += ["", f"_{_one_line(note)}_"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- filling a card


def _chunks(text: str) -> list[str]:
    """The card's lines with their line ends, so that joining them gives the card back."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def _bare(chunk: str) -> str:
    return chunk.rstrip("\r\n")


def _ends_section(line: str) -> bool:
    return bool(_SEPARATOR.fullmatch(line)) or line.startswith(("## ", "# "))


def _section_span(chunks: Sequence[str]) -> tuple[int, int]:
    """[start, end) of the Firmus Verification Results section among the card's lines."""
    starts: list[int] = []
    fenced = False
    for i, chunk in enumerate(chunks):
        line = _bare(chunk)
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.rstrip() == SECTION_HEADING:
            starts.append(i)
    if len(starts) != 1:
        how = "no" if not starts else f"{len(starts)}"
        raise CardSectionError(
            f'the card has {how} "{SECTION_HEADING}" section{"s" if starts else ""}: '
            "it needs exactly one, as on the template, to fill"
        )
    start = starts[0]
    end = next(
        (j for j in range(start + 1, len(chunks)) if _ends_section(_bare(chunks[j]))),
        len(chunks),
    )
    return start, end


def fill_verification(card_text: str, section: str) -> str:
    """The card with its "## Firmus Verification Results" section (from its heading up to,
    not including, the next `---` line or `## ` heading) replaced by `section`, which ends
    with one blank line. Every other byte is kept; the section takes the line end of the
    card's heading (CRLF or LF). Idempotent. Raises CardSectionError for a card without
    exactly one such section, ValueError for a `section` that is not one."""
    body = section.replace("\r\n", "\n").rstrip("\n").split("\n")
    if body[0].rstrip() != SECTION_HEADING or any(_ends_section(line) for line in body[1:]):
        raise ValueError(
            f'a section must start with "{SECTION_HEADING}" and hold no `---` line or `## ` heading'
        )
    chunks = _chunks(card_text)
    start, end = _section_span(chunks)
    newline = (
        "\r\n"
        if chunks[start].endswith("\r\n")
        or (not chunks[start].endswith("\n") and "\r\n" in card_text)
        else "\n"
    )
    replaced = newline.join([*body, ""]) + newline
    return "".join(chunks[:start]) + replaced + "".join(chunks[end:])


# --------------------------------------------------------------------------- command line

#: (namespace or None for the caller's default, name) -> the ModelQualification, None if absent
QualificationGetter = Callable[[str | None, str], Mapping[str, Any] | None]
#: Reasons of a file that is no result at all: bad input, not a refused measurement.
_NOT_A_RESULT = frozenset(
    {
        WireReason.EMPTY_RESULT,
        WireReason.OVERSIZED_RESULT,
        WireReason.MALFORMED_RESULT,
        WireReason.UNKNOWN_SCHEMA,
    }
)
_MQ_PREFIXES = (
    "mq/",
    "modelqualification/",
    "modelqualifications/",
    f"modelqualification.{GROUP}/",
)
#: The source the offline verdict gives a card's spec: it names no weights, and the checks
#: that compare a result with its source are skipped without a qualification.
_OFFLINE_SOURCE = {"randomWeights": {"architecture": "tiny-llama"}}


class _BadInput(Exception):
    """A file or argument the command cannot use; the message is one line."""


def add_parser(
    subparsers: argparse._SubParsersAction[Any],
    cluster_options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """Add `card` (with `import` and `verify`) to a command's subparsers; returns it.
    `cluster_options` adds the caller's options for reaching the cluster to `verify`."""
    card: argparse.ArgumentParser = subparsers.add_parser(
        "card",
        help="import a model card as a ModelQualification, or fill in its verification results",
        description="The model card round trip: import a filled card as a ModelQualification; "
        "fill its Firmus Verification Results section from the verdict.",
    )
    sub = card.add_subparsers(dest="card_command", required=True, metavar="{import,verify}")
    imp = sub.add_parser("import", help="write the ModelQualification a filled card declares")
    imp.add_argument("card", type=Path, metavar="MODEL_CARD.md")
    imp.add_argument("--name", help="metadata.name (default: made from the Model Name)")
    imp.add_argument("-n", "--namespace", help="metadata.namespace (default: none)")
    where = imp.add_mutually_exclusive_group(required=True)
    where.add_argument("--pvc", metavar="CLAIM[:PATH]", help="a model directory on a claim")
    where.add_argument("--cache", metavar="CLAIM:MODEL_ID", help="a Hugging Face cache on a claim")
    where.add_argument(
        "--random-weights",
        metavar="ARCH",
        choices=RANDOM_WEIGHTS_ARCHITECTURES,
        help=f"random weights of a real shape: {', '.join(RANDOM_WEIGHTS_ARCHITECTURES)}",
    )
    imp.add_argument("-o", "--output", type=Path, help="the YAML file to write (default: stdout)")
    ver = sub.add_parser("verify", help="fill in the card's Firmus Verification Results")
    ver.add_argument("card", type=Path, metavar="MODEL_CARD.md")
    origin = ver.add_mutually_exclusive_group(required=True)
    origin.add_argument("--from", dest="from_ref", metavar="mq/NAME", help="a ModelQualification")
    origin.add_argument("--result", type=Path, help="result-compact.json or result.json")
    ver.add_argument("-n", "--namespace", help="the ModelQualification's namespace")
    ver.add_argument("--policy", type=Path, help="a TierPolicy YAML (default: model-card)")
    ver.add_argument("--qualification", type=Path, help="the ModelQualification YAML run")
    if cluster_options is not None:
        cluster_options(ver)
    return card


def run(args: argparse.Namespace, get_qualification: QualificationGetter | None) -> int:
    """Run `card import` or `card verify` as parsed by `add_parser`'s parser. Exit codes: 0
    done, 2 bad input (one line on stderr; for a bad card, one line per problem)."""
    try:
        if args.card_command == "import":
            return _run_import(args)
        return _run_verify(args, get_qualification)
    except CardError as exc:
        for problem in exc.problems:
            print(f"{args.card}:{problem.line}: {problem.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except _BadInput as exc:
        print(f"modelgrid card: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def main(
    argv: Sequence[str] | None = None, get_qualification: QualificationGetter | None = None
) -> int:
    """`modelgrid card ...` on its own (argv starts after `modelgrid`, e.g. ['card', ...])."""
    parser = argparse.ArgumentParser(prog="modelgrid")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv), get_qualification)


def _read_text(path: Path) -> str:
    """A file's text, line ends untouched; one line of error for a missing, unreadable or
    non-UTF-8 file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _BadInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadInput(f"{path} is not UTF-8 text (byte {exc.start})") from exc


def _load_doc(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, RecursionError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise _BadInput(f"{path} is not valid {kind}: {_one_line(exc)}") from exc


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`: a reader
    sees the old file or the new one, never part of one. `mode` defaults to a new file's."""
    target = Path(os.path.realpath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise _BadInput(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode if mode is not None else 0o666 & ~_current_umask())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _BadInput(f"cannot write {path}: {exc.strerror or exc}") from exc


def _source(args: argparse.Namespace) -> dict[str, Any]:
    if args.pvc is not None:
        claim, _, path = str(args.pvc).partition(":")
        return {"pvc": {"claimName": claim, **({"path": path} if path else {})}}
    if args.cache is not None:
        claim, sep, model_id = str(args.cache).partition(":")
        if not sep:
            raise _BadInput(f"--cache {_quote(args.cache)} must be CLAIM:MODEL_ID")
        return {"cache": {"claimName": claim, "modelId": model_id}}
    return {"randomWeights": {"architecture": args.random_weights}}


def _run_import(args: argparse.Namespace) -> int:
    card = parse_card(_read_text(args.card))
    try:
        manifest = card_to_qualification(
            card, name=args.name, namespace=args.namespace, source=_source(args)
        )
    except ValueError as exc:
        raise _BadInput(str(exc)) from exc
    text = yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True)
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    _write_atomic(args.output, text.encode("utf-8"))
    print(f"{args.output}: ModelQualification {manifest['metadata']['name']} from {args.card}")
    return EXIT_OK


def _qualification_name(ref: str) -> str:
    name = next((ref[len(p) :] for p in _MQ_PREFIXES if ref.casefold().startswith(p)), ref)
    problem = name_problem(name, "the ModelQualification name")
    if problem:
        raise _BadInput(f"--from {_quote(ref)}: {problem}")
    return name


def _facts_from_cluster(
    args: argparse.Namespace, get_qualification: QualificationGetter | None
) -> VerificationFacts:
    if args.policy is not None or args.qualification is not None:
        raise _BadInput("--policy and --qualification go with --result, not with --from")
    if get_qualification is None:
        raise _BadInput("no cluster to read ModelQualifications from: use --result")
    name = _qualification_name(args.from_ref)
    where = f" in namespace {args.namespace}" if args.namespace else ""
    try:
        cr = get_qualification(args.namespace, name)
    except Exception as exc:  # the caller's client: its errors are reported, not raised
        raise _BadInput(f"cannot read ModelQualification {name}{where}: {exc}") from exc
    if cr is None:
        raise _BadInput(f"ModelQualification {name} not found{where}")
    return facts_from_status(cr)


def _result_text(path: Path) -> str:
    """A compact result as written, or the compact form of a full result.json."""
    raw = _read_text(path)
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return raw  # validation refuses it with its reason
    if isinstance(obj, dict) and obj.get("schema") == SCHEMA_FULL:
        try:
            return encode_compact(BenchmarkResult.model_validate(obj))
        except ValidationError as exc:
            raise _BadInput(
                f"{path} is not a valid full result: {validation_message(exc)}"
            ) from exc
    return raw


def _policy_of(path: Path | None) -> tuple[str, TierPolicySpec]:
    if path is None:
        return "model-card", shipped_policy()
    doc = _load_doc(path)
    if not isinstance(doc, dict):
        raise _BadInput(f"{path} holds no TierPolicy")
    try:
        spec = TierPolicySpec.model_validate(doc.get("spec", doc))
    except ValidationError as exc:
        raise _BadInput(f"{path} is not a valid TierPolicy: {validation_message(exc)}") from exc
    return str(_mapping(doc.get("metadata")).get("name") or path.stem), spec


def _spec_for_result(args: argparse.Namespace, card_text: str) -> tuple[QualificationSpec, bool]:
    """The spec the result is judged against, and whether it is the real qualification's
    (identity checked); without --qualification, the card's own claims and workload."""
    if args.qualification is None:
        doc: Any = card_to_qualification(parse_card(card_text), source=_OFFLINE_SOURCE)
    else:
        doc = _load_doc(args.qualification)
    spec = doc.get("spec", doc) if isinstance(doc, dict) else None
    if not isinstance(spec, dict):
        raise _BadInput(f"{args.qualification} holds no ModelQualification spec")
    try:
        return QualificationSpec.model_validate(spec), args.qualification is not None
    except ValidationError as exc:
        raise _BadInput(
            f"{args.qualification} is not a valid ModelQualification: {validation_message(exc)}"
        ) from exc


def _file_date(path: Path) -> dt.date:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).date()


def _facts_from_result(args: argparse.Namespace, card_text: str) -> VerificationFacts:
    if args.namespace is not None:
        raise _BadInput("-n/--namespace goes with --from, not with --result")
    raw = _result_text(args.result)
    spec, checked = _spec_for_result(args, card_text)
    policy_name, policy = _policy_of(args.policy)
    dated: dict[str, Any] = {
        "verification_date": _file_date(args.result),
        "date_note": "the day the result file was written; a result carries no timestamp",
        "origin": f"the benchmark result {args.result.name}",
    }
    try:
        result = validate_result(raw, spec, policy, check_identity=checked)
        verdict = evaluate(result, spec, policy)
    except ResultRejected as exc:
        if exc.reason in _NOT_A_RESULT:
            raise _BadInput(f"{args.result} is not a benchmark result: {exc.message}") from exc
        claims = spec.claims.model_dump(by_alias=True, exclude_none=True)
        return facts_from_refusal(exc, claims, policy_name, **dated)
    return facts_from_verdict(result, verdict, policy_name, identity_checked=checked, **dated)


def _summary(facts: VerificationFacts) -> str:
    if not facts.verified:
        return f"not verified ({facts.reason})"
    discount = f"{facts.discount_percent:g}% discount" if facts.discount_approved else "no discount"
    return f"{facts.tier_label or 'no tier'}, {discount}"


def _run_verify(args: argparse.Namespace, get_qualification: QualificationGetter | None) -> int:
    text = _read_text(args.card)
    if args.from_ref is not None:
        facts = _facts_from_cluster(args, get_qualification)
    else:
        facts = _facts_from_result(args, text)
    try:
        filled = fill_verification(text, render_verification(facts))
    except CardSectionError as exc:
        raise _BadInput(f"{args.card}: {exc}") from exc
    if filled == text:
        print(f"{args.card}: unchanged (the verification results already say this)")
        return EXIT_OK
    mode = os.stat(args.card).st_mode & 0o7777
    _write_atomic(args.card, filled.encode("utf-8"), mode)
    print(f"{args.card}: filled {SECTION_HEADING} from {facts.origin}: {_summary(facts)}")
    return EXIT_OK
