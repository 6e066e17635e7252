"""Shared test settings: a Hypothesis profile that is reproducible on CI."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI replays the same examples every run (no flaky landings); locally every run explores
# new ones. Deadlines are off: a 2-core CI machine under load is not a bug.
settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")
