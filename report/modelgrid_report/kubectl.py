"""`kubectl modelgrid`: the kubectl plugin (a `kubectl-modelgrid` executable on PATH). Does I/O.

    kubectl modelgrid report [-A | -n NS] [-l SELECTOR] [-o markdown|json] [--output-dir DIR]
    kubectl modelgrid verdict NAME [-n NS]
    kubectl modelgrid trace NAME [-n NS] --evidence-root DIR --png trace.png
    kubectl modelgrid card import|verify MODEL_CARD.md ...

kubectl runs a plugin with its own arguments and environment (KUBECONFIG included), not its
global flags: `--kubeconfig` and `--context` are the plugin's own, with kubectl's meaning.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from modelgrid_report.cli import Style, dispatch


def main(argv: Sequence[str] | None = None) -> int:
    """`kubectl modelgrid`."""
    return dispatch(
        sys.argv[1:] if argv is None else argv, Style("kubectl modelgrid", kubectl=True)
    )


if __name__ == "__main__":
    raise SystemExit(main())
