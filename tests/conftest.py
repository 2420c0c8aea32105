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


def examples(local: int, ci: int | None = None) -> int:
    """``max_examples`` for a test whose examples are costly: ``local`` under the dev and
    fast profiles; under ci, ``ci`` when the test names its CI budget, else never fewer
    than the profile's own count.

    A test may be cheaper on a laptop, never weaker in CI than it is locally.  The few
    tests whose every example costs a daemon round trip or a whole storage history name
    a CI count of their own (``ci=``): the suite must run in well under ten minutes on
    CI's two cores, and 500 examples each of those would take most of that.
    """
    if settings.get_current_profile_name() == "ci":
        return max(local, ci if ci is not None else settings.default.max_examples)
    return local


# Real daemons (subprocess and in-thread) for integration tests.
pytest_plugins = ["tests.daemon", "tests.objstore_services", "tests.storage_backends",
                  "tests.bench_background"]


def pytest_sessionstart(session: object) -> None:
    """Compile the project's modules to ``__pycache__`` once, before any test.

    The suite starts hundreds of Python subprocesses (daemons, ``ftpc``), and on a
    machine with ``PYTHONDONTWRITEBYTECODE`` set (as CI's is) each of them would
    compile every module of ours from source again: about a third of a second of
    CPU per process.  ``compileall`` writes the bytecode regardless of that setting;
    Python checks each file's timestamp, so a stale ``.pyc`` is never used.
    """
    import compileall
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    for package in ("protocol", "storage", "ftpd", "client", "bench", "tests"):
        compileall.compile_dir(repo / package, quiet=1)
