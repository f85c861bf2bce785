"""modelgrid_report: what the Model-to-Grid program publishes, for auditors and developers.

The fleet tiering report (seed 000), the per-run granular analysis (seed 002), plots of power
traces and of the fleet, and the model card round trip (seed 001). It reads the live cluster
through the operator's `Kube`, result files and kept evidence folders (through the benchmark's
one evidence reader), and is the top of the import graph: neither the operator nor the
benchmark imports it. The `modelgrid` and `kubectl-modelgrid` commands live here.
"""

__version__ = "0.1.0"
