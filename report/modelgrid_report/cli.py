"""`modelgrid`: the program's command line. Does file and network I/O.

    modelgrid verdict --result result.json [...]     the operator's verdict, offline
    modelgrid report [-A | -n NS] [-l SELECTOR] ...  the fleet tiering report and per-run analysis
    modelgrid card import|verify MODEL_CARD.md ...   the model card round trip
    modelgrid trace NAME [-n NS] ...                 one qualification's power trace, as a PNG

Each subcommand exits 0 on success, 2 on bad input (one line on stderr, never a traceback) and
3 where a result was refused.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from modelgrid_operator import cli as verdict_cli


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the subcommand; `verdict` is the operator's own offline verdict."""
    args = list(sys.argv[1:] if argv is None else argv)
    return verdict_cli.main(args)


if __name__ == "__main__":
    raise SystemExit(main())
