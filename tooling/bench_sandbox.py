"""Sandbox overhead benchmark (``manage.py bench_sandbox``), importable without Django.

Overhead is what an execution costs beyond the strategy's own work: the request encoding, the
hand-over to the zygote, fork and confinement, building the candles DataFrame, returning and
checking the result. The benchmark strategy times its own body and reports it, so

    overhead wall = wall time of run_strategy - the strategy's own time
    overhead CPU  = CPU of the calling thread + CPU of the sandbox processes (supervisor,
                    executor, or the cold child) + the zygote's CPU spent forking (mean)
                    - the strategy's own time

Scenarios: warm (one zygote per worker process, as in Celery) and cold (the first execution
of a worker process: zygote start-up included), with and without bubblewrap, plus the
one-process-per-execution fallback ("cold process"). "warm, prepared" is how the candle-close
pipeline runs a strategy: ``prepare_sandbox`` first, then the execution's own database reads
(PREPARED_GAP_S stands for them here), then ``run_strategy``; the plain "warm" rows call
``run_strategy`` back to back, so every sandbox is set up on the execution's time.

The CPU of a supervisor and an executor is counted up to the supervisor's report: their
exit after it (the teardown of their address spaces) is not in the figures.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from strategies.sandbox import isolation, zygote_client
from strategies.sandbox.runner import prepare_sandbox, run_strategy
from strategies.sandbox.samples import synthetic_candles

BENCH_STRATEGY = """
import time
LOOKBACK = 200

def generate_signal(candles, settings):
    started = time.perf_counter()
    close = candles["close"]
    fast, slow = close.rolling(10).mean(), close.rolling(50).mean()
    price = float(close.iloc[-1])
    long = bool(fast.iloc[-1] > slow.iloc[-1])
    return {"signal": "LONG" if long else "HOLD", "price": price,
            "stopLoss": price * 0.98 if long else None, "takeProfit": None,
            "metadata": {"rows": len(candles), "own_ms": (time.perf_counter() - started) * 1000}}
"""
# Between prepare_sandbox and run_strategy in a prepared scenario: about what an execution
# spends reading its candles and stops from the database after it prepared its sandbox.
PREPARED_GAP_S = 0.02


@dataclass
class Scenario:
    name: str
    mode: str  # run_strategy isolation_mode
    fresh_zygote: bool  # restart the zygote before every run (a worker's first execution)
    runs: int
    prepared: bool = False  # prepare_sandbox, PREPARED_GAP_S, then the execution
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    own_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def _zygote_cpu_ms(mode: str) -> float:
    """CPU used so far by the live zygote: its Python process (forks included) and, under
    bubblewrap, the two bwrap processes above it; not its per-execution children."""
    zygote = zygote_client._zygotes.get(mode)
    if zygote is None or not zygote.alive():
        return 0.0
    depth = 2 if mode == "bwrap" else 0  # bwrap -> bwrap (PID 1 of its namespace) -> zygote
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in _process_chain(zygote.proc.pid, depth):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) * 1000 / ticks
    return total


def _process_chain(root: int, depth: int) -> list[int]:
    """``root`` and its descendants down to ``depth`` levels."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    level, found = [root], [root]
    for _ in range(depth):
        level = [child for pid in level for child in children.get(pid, [])]
        found += level
    return found


def run_scenario(scenario: Scenario, candles: list[list[float]]) -> Scenario:
    zygote_client.shutdown()
    if not scenario.fresh_zygote and scenario.mode != "cold":
        _one_run(scenario, candles, record=False)  # start the zygote (not measured)
    zygote_before = _zygote_cpu_ms(scenario.mode)
    for _ in range(scenario.runs):
        _one_run(scenario, candles, record=True)
    if not scenario.fresh_zygote and scenario.runs:
        # The zygote's fork work cannot be split per run at clock-tick resolution: its mean
        # share is added to every run.
        share = (_zygote_cpu_ms(scenario.mode) - zygote_before) / scenario.runs
        scenario.cpu_ms = [c + share for c in scenario.cpu_ms]
    zygote_client.shutdown()
    return scenario


def _one_run(scenario: Scenario, candles: list[list[float]], *, record: bool) -> None:
    if scenario.fresh_zygote:
        zygote_client.shutdown()  # this run is a worker process's first execution
    prepare_cpu = 0.0  # what preparing cost this thread, counted with the run
    if scenario.prepared:
        prepare_cpu = time.thread_time()
        prepare_sandbox(isolation_mode=scenario.mode)
        prepare_cpu = time.thread_time() - prepare_cpu
        time.sleep(PREPARED_GAP_S)
    thread_cpu = time.thread_time() - prepare_cpu
    started = time.perf_counter()
    result = run_strategy(
        code=BENCH_STRATEGY,
        candles=candles,
        settings={},
        timeout_s=30.0,
        isolation_mode=scenario.mode,
    )
    wall = (time.perf_counter() - started) * 1000
    # Calling thread + sandbox processes (supervisor and executor, or the cold child) + the
    # zygote's whole life when it was started for this run.
    cpu = (time.thread_time() - thread_cpu) * 1000 + result.cpu_ms
    if scenario.fresh_zygote:
        cpu += _zygote_cpu_ms(scenario.mode)
    if not record:
        return
    if not result.ok or result.value is None:
        scenario.failures.append(result.error)
        return
    own = float(result.value["metadata"]["own_ms"])
    scenario.wall_ms.append(wall - own)
    scenario.cpu_ms.append(cpu - own)
    scenario.own_ms.append(own)


def scenarios(runs: int, cold_runs: int, *, bwrap: bool) -> list[Scenario]:
    found: list[Scenario] = []
    modes = (["bwrap"] if bwrap else []) + ["rlimit"]
    for mode in modes:
        found.append(Scenario(f"{mode} warm (zygote)", mode, False, runs))
        found.append(Scenario(f"{mode} warm, prepared", mode, False, runs, prepared=True))
        found.append(Scenario(f"{mode} cold (new zygote)", mode, True, cold_runs))
    found.append(Scenario("rlimit cold process (fallback)", "cold", False, cold_runs))
    return found


def bench(
    *,
    runs: int,
    cold_runs: int,
    candles_count: int = 200,
    write: Callable[[str], None] = print,
) -> list[Scenario]:
    usable, reason = isolation.bwrap_status()
    candles = synthetic_candles(
        count=candles_count, step_ms=300_000, end_ms=int(time.time() // 300) * 300_000
    )
    write(
        f"sandbox overhead for a {candles_count}-candle strategy; bubblewrap: "
        f"{'yes' if usable else 'no (' + reason + ')'}; Landlock: "
        f"{'yes' if isolation.landlock_usable() else 'no'}"
    )
    write(
        f"{'scenario':34} {'runs':>4}  {'wall p50':>8} {'p95':>7} {'p99':>7} {'mean':>7}"
        f"  {'CPU p50':>8} {'mean':>7}  {'strategy':>8}"
    )
    results = []
    for scenario in scenarios(runs, cold_runs, bwrap=usable):
        run_scenario(scenario, candles)
        results.append(scenario)
        write(format_row(scenario))
    write("(milliseconds per execution; 'strategy' is the strategy's own time, not included)")
    goal = next((s for s in results if s.prepared and s.mode == "bwrap" and s.wall_ms), None)
    if goal is not None:
        write(
            f"goal: overhead <= 5 ms wall p50, warm, with bubblewrap; {goal.name}: "
            f"{_percentile(goal.wall_ms, 50):.1f} ms (load average {os.getloadavg()[0]:.2f} "
            f"on {os.cpu_count()} cores)"
        )
    return results


def format_row(s: Scenario) -> str:
    if not s.wall_ms:
        return f"{s.name:34} {0:>4}  failed: {s.failures[:1]}"
    row = (
        f"{s.name:34} {len(s.wall_ms):>4}  {_percentile(s.wall_ms, 50):>8.1f} "
        f"{_percentile(s.wall_ms, 95):>7.1f} {_percentile(s.wall_ms, 99):>7.1f} "
        f"{statistics.fmean(s.wall_ms):>7.1f}  {_percentile(s.cpu_ms, 50):>8.1f} "
        f"{statistics.fmean(s.cpu_ms):>7.1f}  {statistics.fmean(s.own_ms):>8.2f}"
    )
    if s.failures:
        row += f"  ({len(s.failures)} failed: {s.failures[0][:60]})"
    return row
