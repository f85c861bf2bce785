"""`python -m modelgrid_operator`: run the operator (kopf, standalone, JSON logs). Does I/O.

Settings come from the environment (`MODELGRID_*`, see docs/operations.md); the only options are
`--help` and `--version`, so that a mistyped invocation never starts an operator by accident.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

# kopf imports the official kubernetes client wherever it is installed (to recognise its model
# classes; we pass plain dicts) and that import is about 15 MiB of the operator's memory. The
# image does not install it; where a development environment does (the sandbox, the tests),
# this keeps the operator the image's size, so what is measured there is what runs in-cluster.
sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]

import kopf  # noqa: E402

from modelgrid_operator import handlers  # noqa: E402, F401 - registers the handlers
from modelgrid_operator.settings import Settings  # noqa: E402


def _parse(argv: Sequence[str]) -> None:
    from modelgrid_operator import __version__

    p = argparse.ArgumentParser(
        prog="python -m modelgrid_operator",
        description="The modelgrid operator: ModelQualification -> benchmark Job -> verdict. "
        "Configured by MODELGRID_* environment variables (docs/operations.md).",
    )
    p.add_argument("--version", action="version", version=f"modelgrid-operator {__version__}")
    p.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> None:
    _parse(sys.argv[1:] if argv is None else argv)
    try:
        cfg = Settings.from_env()
    except ValueError as exc:  # a misconfigured chart: one line, not a traceback
        print(f"modelgrid-operator: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=False)
    kopf.run(
        standalone=True,  # one replica (Recreate); no peering objects needed
        clusterwide=not cfg.namespaces,
        namespaces=cfg.namespaces,
        liveness_endpoint=cfg.liveness_endpoint or None,
    )


if __name__ == "__main__":
    main()
