"""modelgrid_operator: the kopf operator that turns ModelQualifications into verified tiers.

Pure decision modules (`api`, `verdict`, `jobs`, `reconcile`) are tested without a cluster; side
effects live in `kube` (the Kubernetes API), `handlers` (kopf wiring) and `metrics`.
"""

__version__ = "0.1.0"
