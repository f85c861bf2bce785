"""Shared pytest configuration: hypothesis profile (deterministic, no deadline on slow CI)."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "modelgrid", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("modelgrid")
