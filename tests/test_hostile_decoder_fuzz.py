"""The decoder fuzz harness (tests/fuzz_decoder.py) as a bounded regression test.

`make fuzz` runs it under atheris for minutes; here its random-and-mutated input
loop runs for a few seconds so the harness, and the decoders' promises it checks
(only ProtocolError escapes, bounded buffering, cut-invariance, re-encoding), are
exercised on every test run.
"""

from __future__ import annotations

from tests import fuzz_decoder


def test_decoders_survive_random_and_mutated_streams():
    """20 000 inputs (or 5 s), fixed seed: no check of the harness fails."""
    assert fuzz_decoder.run_random(seconds=5, runs=20_000, seed=20_240_601) > 1_000


def test_fuzz_entry_point_runs_without_atheris_flags():
    """The command-line entry point runs (bounded) and reports success."""
    assert fuzz_decoder.main(["fuzz_decoder", "-no_atheris=1", "-max_total_time=1",
                              "-runs=500"]) == 0
