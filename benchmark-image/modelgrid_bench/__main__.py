"""`python -m modelgrid_bench`: see modelgrid_bench.cli."""

from modelgrid_bench.cli import main

raise SystemExit(main())
