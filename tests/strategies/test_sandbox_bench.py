"""The bench_sandbox command runs every scenario and prints its table (figures not asserted)."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from strategies.sandbox import isolation


def test_bench_sandbox_prints_every_scenario() -> None:
    out = io.StringIO()
    call_command("bench_sandbox", runs=2, cold_runs=1, stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("sandbox overhead for a 200-candle strategy")
    names = ["rlimit warm (zygote)", "rlimit warm, prepared", "rlimit cold (new zygote)"]
    names += ["rlimit cold process (fallback)"]
    if isolation.bwrap_status()[0]:
        names += ["bwrap warm (zygote)", "bwrap warm, prepared", "bwrap cold (new zygote)"]
    for name in names:
        row = next(line for line in lines if line.startswith(name))
        assert "failed" not in row
        assert len(row.split()) >= 9  # runs, wall p50/p95/p99/mean, CPU p50/mean, strategy


def test_bench_sandbox_rejects_bad_arguments() -> None:
    with pytest.raises(CommandError, match="--runs"):
        call_command("bench_sandbox", runs=0, stdout=io.StringIO())
