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


def examples(local: int) -> int:
    """``max_examples`` for a test whose examples are costly: ``local`` under the dev and
    fast profiles, never fewer than the profile's own count under ci.

    A test may be cheaper on a laptop, never weaker in CI: a plain
    ``settings(max_examples=...)`` would override the ci profile's 500 downwards.
    """
    if settings.get_current_profile_name() == "ci":
        return max(local, settings.default.max_examples)
    return local


# Real daemons (subprocess and in-thread) for integration tests.
pytest_plugins = ["tests.daemon", "tests.objstore_services", "tests.storage_backends"]
