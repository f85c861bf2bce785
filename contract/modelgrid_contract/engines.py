"""The serving engines a `server` model source may start in the benchmark pod. Pure.

Shared by the operator (which refuses a spec before any pod exists) and the benchmark (which
builds the engine's command line and refuses the same arguments again: the pod must not trust
the operator's copy of the rules either). The benchmark owns the flags that decide what is
measured and how it is reached (model, host, port, served name, weight format, remote code), so
a tenant's extra arguments may not set them.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final


class EngineName(StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"
    TGI = "tgi"
    #: a command the spec gives; only where the TierPolicy's engineAccess allows it
    CUSTOM = "custom"


PRESET_ENGINES: Final = frozenset({EngineName.VLLM, EngineName.SGLANG, EngineName.TGI})

#: Bounds of a spec's extra engine arguments and of a custom command (the CRD's too).
MAX_ENGINE_ARGS: Final = 32
MAX_ENGINE_ARG_CHARS: Final = 256
DEFAULT_ENGINE_PORT: Final = 8000
DEFAULT_STARTUP_TIMEOUT_S: Final = 900
MAX_STARTUP_TIMEOUT_S: Final = 3600

#: Flags (in `-`/`_` spelling-insensitive form) that a tenant's arguments must not carry:
#: executing the model repository's code, loading weights in a format that can carry code
#: (pickle), or moving the model, the address or the name the benchmark measures and calls.
FORBIDDEN_ENGINE_FLAGS: Final = frozenset(
    {
        "trust-remote-code",
        "load-format",
        "model",
        "model-path",
        "model-id",
        "tokenizer",
        "revision",
        "code-revision",
        "host",
        "hostname",
        "port",
        "served-model-name",
        "api-key",
        "download-dir",
        "config",
    }
)

_FLAG = re.compile(r"^--?([A-Za-z0-9][A-Za-z0-9_-]*)(=.*)?$", re.DOTALL)
#: Control and bidirectional-override characters: never in a command line a person reads.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def flag_name(arg: str) -> str | None:
    """The flag an argument sets, in canonical spelling (`--Trust_Remote_Code=1` ->
    `trust-remote-code`), or None for a value."""
    m = _FLAG.match(arg)
    return m.group(1).lower().replace("_", "-") if m else None


def engine_arg_problems(args: list[str] | tuple[str, ...]) -> list[str]:
    """What is wrong with a spec's extra engine arguments, in a person's words (empty: fine)."""
    problems: list[str] = []
    if len(args) > MAX_ENGINE_ARGS:
        problems.append(f"at most {MAX_ENGINE_ARGS} engine arguments, got {len(args)}")
    for i, arg in enumerate(args):
        if not arg or len(arg) > MAX_ENGINE_ARG_CHARS:
            problems.append(f"args[{i}] must have 1 to {MAX_ENGINE_ARG_CHARS} characters")
        elif _UNPRINTABLE.search(arg):
            problems.append(f"args[{i}] contains a control or bidirectional-override character")
        else:
            name = flag_name(arg)
            if name in FORBIDDEN_ENGINE_FLAGS:
                problems.append(
                    f"args[{i}] sets --{name}, which the benchmark owns (the model, its address "
                    "and name, safetensors weights, no remote code)"
                )
    return problems
