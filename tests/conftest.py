"""Shared pytest configuration.

Hypothesis profiles are only *registered* here, never loaded: the Makefile picks
one with ``--hypothesis-profile=$(HYPOTHESIS_PROFILE)`` (``dev`` locally, ``ci``
in CI), and a ``load_profile`` call here would override that flag.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100)
settings.register_profile(
    "ci",
    max_examples=500,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("fast", max_examples=20)

# Real daemons (subprocess and in-thread) for integration tests.
pytest_plugins = ["tests.daemon", "tests.objstore_services"]
