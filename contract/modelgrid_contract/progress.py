"""Live progress of a running benchmark: one line in its log, read by the operator. Pure.

The benchmark pod has no access to the API, so it reports progress the least-privileged way:
a line `MODELGRID_PROGRESS {json}` on its standard error at every stage and run, and at least
every `HEARTBEAT_S` in between, which the operator reads with `pods/log` get (the last few
lines). Progress only ever informs status and the stall check; it never changes a price. A
line must start with the prefix (every line the engine prints is prefixed by the benchmark's
logger, so an engine cannot write one), and a malformed one is ignored.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Final

from pydantic import ConfigDict, Field, ValidationError

from modelgrid_contract._model import Wire

PREFIX: Final = "MODELGRID_PROGRESS "
#: The benchmark repeats its current progress at least this often, so a reader of the last
#: lines of its log always finds one.
HEARTBEAT_S: Final = 5.0
#: How many of the log's last lines the operator reads (a few heartbeats' worth).
TAIL_LINES: Final = 40
MAX_LINE_CHARS: Final = 1024


class Stage(StrEnum):
    """Where a benchmark is, in the order a session goes through them."""

    LOADING = "loading"  # identifying the GPUs, loading the model
    ENGINE_STARTUP = "engine-startup"  # a server source's engine, until it is healthy
    IDLE_BASELINE = "idle-baseline"
    WARMUP = "warmup"
    MEASURING = "measuring"  # run i of n, level j of m
    ANALYSING = "analysing"


#: Stages that wait on a model load: the stall allowance there is the engine's start-up time.
LOADING_STAGES: Final = frozenset({Stage.LOADING, Stage.ENGINE_STARTUP})


class Progress(Wire):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    stage: Stage
    run: Annotated[int, Field(ge=0, le=100)] = 0
    runs: Annotated[int, Field(ge=0, le=100)] = 0
    level: Annotated[int, Field(ge=0, le=8)] = 0
    levels: Annotated[int, Field(ge=0, le=8)] = 0
    #: requests completed in the session so far: what the stall check watches
    done: Annotated[int, Field(ge=0)] = 0
    total: Annotated[int, Field(ge=0)] = 0
    eta_s: Annotated[float, Field(ge=0)] | None = None

    def line(self) -> str:
        return PREFIX + self.model_dump_json(exclude_none=True)

    def key(self) -> tuple[str, int, int, int]:
        """What changes when the benchmark moves on (a heartbeat alone does not)."""
        return self.stage.value, self.run, self.level, self.done

    def summary(self) -> str:
        """One short phrase for a kubectl column, e.g. `run 2/3, level 1/2, ~1m40s left`."""
        if self.stage is Stage.MEASURING:
            text = f"run {self.run}/{self.runs}"
            if self.levels > 1:
                text += f", level {self.level}/{self.levels}"
        else:
            text = self.stage.value
        if self.eta_s is not None:
            minutes, seconds = divmod(round(self.eta_s), 60)
            text += f", ~{minutes}m{seconds:02d}s left" if minutes else f", ~{seconds}s left"
        return text


def parse_progress(log_text: str) -> Progress | None:
    """The last well-formed progress line of a log excerpt (None: there is none)."""
    for raw in reversed(log_text.splitlines()):
        line = raw.strip()
        if not line.startswith(PREFIX) or len(line) > MAX_LINE_CHARS:
            continue
        try:
            obj = json.loads(line[len(PREFIX) :])
            return Progress.model_validate(obj)
        except (ValueError, ValidationError):
            continue
    return None
