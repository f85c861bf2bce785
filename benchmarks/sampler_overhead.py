"""Sampler overhead on inference throughput, measured side by side in one run. Does I/O.

Loads one model once, then runs rounds; each round measures tokens/s with no sampler and with
the sampler at each interval, in a shuffled order (so drift on a noisy machine spreads evenly),
and reports the ratio to the no-sampler throughput of the same round. Writes a markdown section
to docs/benchmarks.md between markers, and prints JSON on stdout.

On a GPU node:  python benchmarks/sampler_overhead.py --source nvml --model random:llama-3.1-8b
Without a GPU:  python benchmarks/sampler_overhead.py  (replayed power, tiny model on CPU: this
measures the sampler thread's cost to the Python process, not NVML's).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

from modelgrid_bench.backends.base import BackendOptions, GenerationParams, open_backend
from modelgrid_bench.sampler import Sampler
from modelgrid_bench.sources import open_source

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BEGIN = "<!-- sampler-overhead:begin -->"
END = "<!-- sampler-overhead:end -->"


def measure(backend_run: object, batches: int) -> float:
    start = time.monotonic()
    tokens = 0
    for _ in range(batches):
        timing = backend_run()  # type: ignore[operator]
        tokens += sum(timing.output_tokens)
    return tokens / (time.monotonic() - start)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="replay:builtin:h200-busy")
    p.add_argument("--model", default="random:tiny-llama")
    p.add_argument("--device", default="auto")
    p.add_argument("--intervals-ms", default="25,10")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batches", type=int, default=40, help="generate() calls per measurement")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--no-doc", action="store_true")
    args = p.parse_args()

    backend = open_backend(
        BackendOptions(kind="transformers", model=args.model, device=args.device)
    )
    backend.load()
    source = open_source(args.source)
    params = GenerationParams(
        input_tokens=64, output_tokens=args.tokens, temperature=0.0, top_p=1.0, seed=0
    )
    prompts = ["measure the sampler"] * args.batch_size

    def one() -> object:
        return backend.generate(prompts, params, time.monotonic)

    one()  # warm-up
    configs = ["none"] + [f"{ms}ms" for ms in args.intervals_ms.split(",")]
    rng = random.Random(0)
    rates: dict[str, list[float]] = {c: [] for c in configs}
    achieved: dict[str, list[float]] = {c: [] for c in configs}
    for _ in range(args.rounds):
        order = configs[:]
        rng.shuffle(order)
        for c in order:
            sampler = None
            if c != "none":
                sampler = Sampler(source, interval_s=float(c[:-2]) / 1000.0)
                sampler.start()
            rates[c].append(measure(one, args.batches))
            if sampler is not None:
                sampler.stop()
                t = sampler.trace().t_s
                if t.size > 1:
                    achieved[c].append(float((t[-1] - t[0]) / (t.size - 1)))
    backend.close()
    source.close()

    base = rates["none"]
    rows = []
    for c in configs[1:]:
        ratios = [r / b for r, b in zip(rates[c], base, strict=True)]
        rows.append(
            {
                "config": c,
                "median_ratio": statistics.median(ratios),
                "min_ratio": min(ratios),
                "max_ratio": max(ratios),
                "median_tokens_per_s": statistics.median(rates[c]),
                "achieved_interval_ms": 1000 * statistics.median(achieved[c])
                if achieved[c]
                else None,
            }
        )
    report = {
        "model": args.model,
        "source": args.source,
        "device": args.device,
        "rounds": args.rounds,
        "batches": args.batches,
        "batch_size": args.batch_size,
        "tokens": args.tokens,
        "baseline_median_tokens_per_s": statistics.median(base),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": rows,
    }
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    if not args.no_doc:
        write_doc(report, " ".join(sys.argv[1:]))
    return 0


def write_doc(report: dict[str, object], argv: str) -> None:
    lines = [
        BEGIN,
        f"Command: `{' '.join(['python benchmarks/sampler_overhead.py', argv]).strip()}`",
        "",
        f"Model `{report['model']}` on `{report['device']}`, power source `{report['source']}`, "
        f"{report['rounds']} rounds of {report['batches']} batches x {report['batch_size']} "
        f"prompts x {report['tokens']} tokens; baseline "
        f"{report['baseline_median_tokens_per_s']:.1f} tokens/s (median).",
        "",
        "| sampler | tokens/s ratio (median) | min | max | achieved interval (ms) |",
        "|---|---|---|---|---|",
    ]
    for r in report["results"]:  # type: ignore[attr-defined]
        ach = r["achieved_interval_ms"]
        lines.append(
            f"| {r['config']} | {r['median_ratio']:.3f} | {r['min_ratio']:.3f} | "
            f"{r['max_ratio']:.3f} | {'-' if ach is None else f'{ach:.1f}'} |"
        )
    lines.append(END)
    block = "\n".join(lines)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
