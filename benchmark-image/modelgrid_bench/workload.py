"""Deterministic, seeded prompts for the declared prompt type. Pure: no I/O.

The same workload seed gives the same prompts on every machine, and every repeat of a session
uses the same prompts, so run-to-run differences come from the system, not from the text.
Warm-up prompts are drawn from a separate stream so they never coincide with measured ones.
"""

from __future__ import annotations

import random

from modelgrid_contract.workload import PromptType, Workload

_TOPICS = (
    "the water cycle",
    "a city's electricity grid",
    "how vaccines train the immune system",
    "the history of the printing press",
    "ocean tides",
    "photosynthesis",
    "public transport",
    "compound interest",
    "volcanoes",
    "the migration of birds",
    "how a compiler works",
    "solar panels on a house",
    "a good night's sleep",
    "coffee farming",
    "glaciers",
    "the invention of the telephone",
    "recycling plastics",
    "how bridges carry load",
)
_ASKS = (
    "Explain {t} to a curious twelve-year-old.",
    "What are the main misconceptions about {t}?",
    "Give me a short, friendly overview of {t}.",
    "How would you teach {t} in one lesson?",
    "Compare two opposing views on {t}.",
    "Summarise what an engineer should know about {t}.",
)
_CODE_TASKS = (
    "parses a CSV file and returns the average of a numeric column",
    "merges two sorted lists into one sorted list",
    "checks whether a string is a palindrome",
    "computes the n-th Fibonacci number iteratively",
    "deduplicates records by a key",
    "validates an email address with a regular expression",
    "implements a bounded LRU cache",
    "converts a Roman numeral to an integer",
    "retries an HTTP call with exponential backoff",
)
_LANGS = ("Python", "Go", "Rust", "TypeScript", "Java")
_SENTENCES = (
    "The committee will meet again next Tuesday to review the budget.",
    "Please keep the door closed while the experiment is running.",
    "Our train was delayed because of snow on the tracks.",
    "The museum opens at nine and closes at five on weekdays.",
    "She planted tomatoes, basil and peppers in the garden.",
    "Remember to back up your files before installing the update.",
)
_TARGETS = ("French", "German", "Spanish", "Japanese", "Portuguese", "Italian")


def _prompt(kind: PromptType, rng: random.Random) -> str:
    if kind is PromptType.CODE:
        return (
            f"Write a {rng.choice(_LANGS)} function that {rng.choice(_CODE_TASKS)}. "
            "Include type annotations, a docstring and two unit tests."
        )
    if kind is PromptType.TRANSLATION:
        picked = rng.sample(_SENTENCES, k=3)
        return f"Translate into {rng.choice(_TARGETS)}:\n" + "\n".join(picked)
    return "User: " + rng.choice(_ASKS).format(t=rng.choice(_TOPICS)) + "\nAssistant:"


def prompts(workload: Workload, *, warmup: bool = False) -> list[str]:
    """The measured prompts (or the warm-up prompts) of a workload, in order."""
    count = workload.warmup_samples if warmup else workload.samples
    rng = random.Random(f"{workload.seed}:{'warmup' if warmup else 'measure'}")
    return [_prompt(workload.prompt_type, rng) for _ in range(count)]


def batches(items: list[str], batch_size: int) -> list[list[str]]:
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
