"""`python -m modelgrid_operator`: run the operator (kopf, standalone, JSON logs)."""

from __future__ import annotations

import kopf

from modelgrid_operator import handlers  # noqa: F401 - registers the handlers
from modelgrid_operator.settings import Settings


def main() -> None:
    cfg = Settings.from_env()
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=False)
    kopf.run(
        standalone=True,  # one replica (Recreate); no peering objects needed
        clusterwide=not cfg.namespaces,
        namespaces=cfg.namespaces,
        liveness_endpoint=cfg.liveness_endpoint or None,
    )


if __name__ == "__main__":
    main()
