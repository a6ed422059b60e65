"""Strategy sessions (one sandboxed executor fed a backtest's candles one close at a time) and
run_signals (generate_signals once over every candle). No database needed.

Sessions run in every mode: with bubblewrap ("bwrap", skipped where it is unusable), without
it ("rlimit"), and "cold" (one fresh process per step, the fallback without a zygote) where
the point is that the values do not depend on the mode. Hostile cases go through
``hostile_session()``, which also checks that nothing is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from strategies.sandbox import (
    StepResult,
    StrategySession,
    child,
    isolation,
    run_signals,
    run_strategy,
    strategy_session,
    zygote_client,
)
from tests.strategies.test_sandbox import (
    BWRAP,
    CANARY,
    LANDLOCK,
    PROJECT_ROOT,
    _descendants,
    _eventually,
    _leftover_work_files,
)

MODES = [BWRAP, "rlimit"]
ALL_MODES = [BWRAP, "rlimit", "cold"]
START_MS = 1_700_000_000_000
CANDLES = [[START_MS + i * 60_000, 1.0, 2.0, 0.5, 1.5 + i, 10.0 + i] for i in range(120)]

WINDOW = """
LOOKBACK = 20
def generate_signal(candles, settings):
    close = candles["close"]
    return {"n": len(candles), "first": candles["timestamp"].iloc[0].isoformat(),
            "last": float(close.iloc[-1]), "sum": float(close.sum()),
            "volume": float(candles["volume"].mean()), "settings": settings}
"""


@pytest.fixture(scope="module", autouse=True)
def _fresh_zygotes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Zygotes of this module only, started with a canary secret in the environment and their
    work directories in a directory of their own (for the leak checks)."""
    zygote_client.shutdown()
    previous = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("session-tmp"))
    os.environ["SANDBOX_CANARY_SECRET"] = CANARY
    yield
    zygote_client.shutdown()
    os.environ.pop("SANDBOX_CANARY_SECRET", None)
    tempfile.tempdir = previous


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=ALL_MODES)
def any_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run_session(
    code: str, rows: list[list[float]], history: list[list[float]] | None = None, **options: object
) -> tuple[list[StepResult], StrategySession]:
    """One session over ``rows`` (one step per row) -> (every step's result, the session)."""
    params: dict = {"settings": {}, "timeout_s": 5.0, "history": history or []}
    params.update(options)
    with strategy_session(code=textwrap.dedent(code), **params) as session:
        results = [session.step([row]) for row in rows]
    return results, session


def hostile_session(
    code: str, mode: str, rows: list[list[float]], **options: object
) -> tuple[list[StepResult], StrategySession]:
    """Run a hostile session and check that nothing leaked or was left behind."""
    zygote = zygote_client.get_zygote(mode)
    processes = _descendants(os.getpid())
    results, session = run_session(code, rows, isolation_mode=mode, **options)
    assert CANARY not in repr(results) + session.logs, "a secret of the worker reached it"
    assert session.isolation == mode
    assert _eventually(lambda: _descendants(os.getpid()) <= processes), (
        f"processes left behind: {_descendants(os.getpid()) - processes}"
    )
    assert _eventually(lambda: not _leftover_work_files()), _leftover_work_files()
    assert zygote.alive(), "the zygote died"
    assert zygote_client.get_zygote(mode) is zygote
    return results, session


# --------------------------------------------------------------------------- values


def test_steps_give_what_run_strategy_gives_on_the_same_windows(any_mode: str) -> None:
    # given a session warmed up with 30 candles, then fed the next ones one close at a time
    history, rows = CANDLES[:30], CANDLES[30:34] if any_mode == "cold" else CANDLES[30:45]
    settings = {"k": [1, "a"]}

    # when every close is a step
    results, session = run_session(
        WINDOW, rows, history, settings=settings, isolation_mode=any_mode
    )

    # then each step's value is what a single execution gives on the candles up to that close
    for index, result in enumerate(results):
        window = CANDLES[: 31 + index]
        expected = run_strategy(code=WINDOW, candles=window, settings=settings, timeout_s=5.0)
        assert expected.ok, expected.error
        assert result == StepResult(True, expected.value, "")
    assert session.isolation == ("rlimit" if any_mode == "cold" else any_mode)
    assert session.error == ""
    assert session.steps == len(rows)
    assert session.cpu_ms > 0


def test_a_step_in_two_halves_answers_the_same_and_keeps_to_its_order(any_mode: str) -> None:
    # given a session warmed up with 30 candles
    history, rows = CANDLES[:30], CANDLES[30:33]
    options = {"code": WINDOW, "settings": {}, "history": history, "isolation_mode": any_mode}
    with strategy_session(**options) as whole, strategy_session(**options) as halves:
        # when one session steps and the other sends, then receives, each close
        expected = [whole.step([row]) for row in rows]
        answers = []
        for row in rows:
            assert halves.send([row]) is None
            answers.append(halves.receive())
        # then the answers are the same
        assert answers == expected
        # and a second receive, or a second send before receiving, is refused
        assert "none were sent" in halves.receive().error
        assert halves.send([CANDLES[33]]) is None
        assert "already sent" in halves.send([CANDLES[34]]).error  # type: ignore[union-attr]
        assert halves.receive() == StepResult(True, whole.step([CANDLES[33]]).value, "")


SLOW_ON_THE_LAST = """
import time
LOOKBACK = 5
def generate_signal(candles, settings):
    if candles["close"].iloc[-1] > 40:
        time.sleep(2)  # far longer than the assertion after the send takes, under any load
    return None
"""


def test_answered_tells_whether_a_receive_would_wait(mode: str) -> None:
    # given a session whose strategy answers the first candle at once and sleeps on the next
    with strategy_session(
        code=SLOW_ON_THE_LAST, settings={}, history=CANDLES[:30], isolation_mode=mode
    ) as session:
        # then with nothing sent, nothing is awaited
        assert session.answered()
        # when a quick step is sent, its answer comes in soon
        assert session.send([CANDLES[30]]) is None
        assert _eventually(session.answered)
        assert session.receive().ok
        # and while the slow one computes, a receive would wait
        assert session.send([CANDLES[40]]) is None
        assert not session.answered()
        assert session.receive().ok and session.answered()


def test_the_warm_up_history_fills_the_first_window() -> None:
    # given a LOOKBACK of 50 and 80 candles of history
    code = "LOOKBACK = 50\n" + WINDOW.replace("LOOKBACK = 20\n", "")

    # when the first closes are stepped
    results, _ = run_session(code, CANDLES[80:82], CANDLES[:80])

    # then the first window already holds LOOKBACK rows: 49 of history and the new close
    first = results[0].value
    assert first is not None
    assert first["n"] == 50
    assert first["first"] == pd.Timestamp(CANDLES[31][0], unit="ms", tz="UTC").isoformat()
    assert first["last"] == CANDLES[80][4]
    assert results[1].value is not None and results[1].value["last"] == CANDLES[81][4]


def test_a_short_history_gives_growing_windows_and_lookback_overrides_the_module() -> None:
    # given 3 candles of history and a LOOKBACK of 20, overridden to 5 by the caller
    rows = CANDLES[3:10]

    # when stepping with and without the override
    default, _ = run_session(WINDOW, rows, CANDLES[:3])
    overridden, _ = run_session(WINDOW, rows, CANDLES[:3], lookback=5)

    # then the windows grow with the rows until LOOKBACK
    assert [r.value["n"] for r in default if r.value] == [4, 5, 6, 7, 8, 9, 10]
    assert [r.value["n"] for r in overridden if r.value] == [4, 5, 5, 5, 5, 5, 5]


def test_several_candles_in_one_step_and_history_beyond_the_window() -> None:
    # given 100 candles of history (more than LOOKBACK)
    # when one step appends three candles at once, then one more
    with strategy_session(code=WINDOW, settings={}, history=CANDLES[:100]) as session:
        three = session.step(CANDLES[100:103])
        one = session.step(CANDLES[103:104])

    # then each step shows the newest LOOKBACK rows, the new ones last
    assert three.value is not None and one.value is not None
    assert three.value["last"] == CANDLES[102][4] and three.value["n"] == 20
    assert three.value["sum"] == sum(row[4] for row in CANDLES[83:103])
    assert one.value["sum"] == sum(row[4] for row in CANDLES[84:104])


def test_a_strategy_mutating_its_frame_or_module_changes_nothing_later() -> None:
    # given a strategy that wrecks its window and counts its calls in a module global
    code = """
    CALLS = []
    def generate_signal(candles, settings):
        CALLS.append(1)
        last = float(candles["close"].iloc[-1])
        candles["close"] *= 0
        candles.drop(candles.index, inplace=True)
        return {"last": last, "calls": len(CALLS)}
    """

    # when it runs for a few steps
    results, _ = run_session(code, CANDLES[10:14], CANDLES[:10])

    # then every step sees the real candles and a fresh module, as a single execution does
    assert [r.value for r in results] == [
        {"last": CANDLES[i][4], "calls": 1} for i in range(10, 14)
    ]


def test_hold_none_and_prints_are_kept_in_the_session_logs() -> None:
    code = "def generate_signal(c, s):\n    print('close', float(c['close'].iloc[-1]))\n"

    results, session = run_session(code, CANDLES[:3])

    assert results == [StepResult(True, None, "")] * 3
    assert session.logs == "".join(f"close {row[4]}\n" for row in CANDLES[:3])


def test_logs_are_capped_over_the_whole_session() -> None:
    # given a strategy printing 400 KiB at each of five steps
    code = "def generate_signal(c, s):\n    print('x' * 400 * 1024)\n"

    # when the session ends
    results, session = run_session(code, CANDLES[:5])

    # then the logs keep the first MiB, like one execution's
    assert all(r.ok for r in results)
    assert len(session.logs) < 1024 * 1024 + 100
    assert session.logs.endswith(f"[... {5 * (400 * 1024 + 1) - 1024 * 1024} bytes dropped]")


# --------------------------------------------------------------------------- failures


FAILS_AT_THE_THIRD_STEP = """
def helper(c):
    return 1 / (len(c) - 3)

def generate_signal(c, s):
    print("step", len(c))
    return {"x": helper(c)}
"""


def test_an_exception_ends_the_session_with_its_line(any_mode: str) -> None:
    # given a strategy that raises at its third step
    # when the session goes on after it
    results, session = run_session(FAILS_AT_THE_THIRD_STEP, CANDLES[:5], isolation_mode=any_mode)

    # then that step reports the exception with its line, like a single execution, and the
    # next ones are refused, naming it
    assert [r.ok for r in results[:2]] == [True, True]
    error = results[2].error
    assert error.startswith("exception: ZeroDivisionError: division by zero (line 3)")
    assert 'File "<strategy>", line 7, in generate_signal' in error
    assert not results[2].sandbox_failure
    refusal = "session already ended: exception: ZeroDivisionError: division by zero (line 3)"
    assert results[3:] == [StepResult(False, None, refusal)] * 2
    assert session.error == error
    assert session.logs == "step 1\nstep 2\nstep 3\n"  # what it printed until it failed


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ("float('nan')", "invalid result: expected a dict or None, got float"),
        ("{'price': float('inf')}", "invalid result: non-finite number"),
        ("[1, 2]", "invalid result: expected a dict or None, got list"),
        ("{'x': object()}", "invalid result: object is not JSON serializable"),
        ("{'x': 'y' * (2 * 1024 * 1024)}", "invalid result: larger than 1048576 bytes"),
    ],
)
def test_invalid_values_end_the_session(returned: str, message: str) -> None:
    code = f"def generate_signal(c, s):\n    return None if len(c) < 2 else {returned}\n"

    results, _ = run_session(code, CANDLES[:3])

    assert results[0].ok
    assert results[1] == StepResult(False, None, message)
    assert results[2].error == f"session already ended: {message}"


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("def generate_signal(c, s):\n    return (\n", "syntax error: "),
        ("x = 1\n", "invalid strategy: generate_signal(candles, settings) is not defined"),
        ("LOOKBACK = 0\ndef generate_signal(c, s):\n    pass\n", "invalid strategy: LOOKBACK"),
        (
            "import sys\ndef generate_signal(c, s):\n    sys.exit(3)\n",
            "strategy called sys.exit(3)",
        ),
    ],
)
def test_a_broken_strategy_fails_its_first_step(code: str, error: str) -> None:
    results, _ = run_session(code, CANDLES[:2])

    assert results[0].error.startswith(error)
    assert results[1].error.startswith("session already ended: ")
    assert not results[0].sandbox_failure


def test_the_per_step_timeout_kills_the_executor_at_once(mode: str) -> None:
    # given a strategy that loops forever at its third step, with a 1 s timeout per step
    code = "def generate_signal(c, s):\n    while len(c) >= 3:\n        pass\n"
    processes = _descendants(os.getpid())
    with strategy_session(
        code=code, settings={}, history=[], timeout_s=1.0, isolation_mode=mode
    ) as session:
        assert [session.step([row]).ok for row in CANDLES[:2]] == [True, True]

        # when that step runs
        started = time.monotonic()
        result = session.step([CANDLES[2]])
        elapsed = time.monotonic() - started

        # then it fails after the timeout, and the executor is gone right away (it is not left
        # burning CPU until the session's budget)
        assert result == StepResult(False, None, "timeout after 1.0 s")
        assert 0.9 < elapsed < 3.0
        assert _eventually(lambda: _descendants(os.getpid()) <= processes, timeout=1.0)
        assert session.step([CANDLES[3]]).error == "session already ended: timeout after 1.0 s"


def test_output_before_a_timeout_is_kept(mode: str) -> None:
    code = "import time\ndef generate_signal(c, s):\n    print('zz', len(c))\n    time.sleep(60)\n"

    results, session = run_session(code, CANDLES[:2], timeout_s=1.0, isolation_mode=mode)

    assert results[0].error == "timeout after 1.0 s"
    assert session.logs == "zz 1\n"


def test_the_budget_bounds_the_whole_session(mode: str) -> None:
    # given steps of 0.4 s each, well within the per-step timeout, and a 1.5 s budget
    code = "import time\ndef generate_signal(c, s):\n    time.sleep(0.4)\n"
    started = time.monotonic()

    # when the session goes on past its budget
    results, _ = run_session(code, CANDLES[:10], timeout_s=5.0, budget_s=1.5, isolation_mode=mode)

    # then the step running when the budget ran out fails, and so does every later one
    ok = [r.ok for r in results]
    assert ok[:3] == [True, True, True] and not any(ok[4:])
    failed = next(r for r in results if not r.ok)
    assert failed.error == "session budget of 1.5 s exceeded"
    assert time.monotonic() - started < 4.0


def test_the_cpu_limit_is_the_budget_not_one_step_timeout(mode: str) -> None:
    # given a session with a 2 s step timeout and a 100 s budget
    code = """
    import resource
    def generate_signal(c, s):
        soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        return {"soft": soft, "hard": hard}
    """

    # when a step reads its CPU limit
    results, _ = run_session(code, CANDLES[:1], timeout_s=2.0, budget_s=100.0, isolation_mode=mode)

    # then the whole session may use the budget's CPU (a backtest needs far more than one
    # step's timeout), and no more
    value = results[0].value
    assert value is not None
    assert 100 <= value["soft"] <= 110 and value["hard"] == value["soft"] + 1


def test_garbage_on_the_data_channel_fails_the_session(mode: str) -> None:
    # given a strategy writing a bogus frame header (4 GiB announced) on its candle socket
    code = "import os\ndef generate_signal(c, s):\n    os.write(0, b'\\xff\\xff\\xff\\xff')\n"

    results, _ = hostile_session(code, mode, CANDLES[:2])

    assert results[0] == StepResult(False, None, "invalid result: malformed result frame")
    assert results[1].error == "session already ended: invalid result: malformed result frame"


def test_an_executor_that_exits_ends_the_session(mode: str) -> None:
    code = "import os\ndef generate_signal(c, s):\n    if len(c) == 2:\n        os._exit(0)\n"

    results, _ = hostile_session(code, mode, CANDLES[:3])

    assert results[0].ok
    assert results[1].error == "process exited with code 0 before returning a result"
    assert not results[1].sandbox_failure


def test_invalid_candles_in_a_step_end_the_session() -> None:
    with strategy_session(code=WINDOW, settings={}, history=CANDLES[:5]) as session:
        bad = session.step([[1.0, 2.0]])
        after = session.step([CANDLES[5]])

    assert bad.error.startswith("invalid candles")
    assert bad.sandbox_failure
    assert after.error.startswith("session already ended: invalid candles")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"isolation_mode": "chroot"}, "invalid isolation mode 'chroot'"),
        ({"timeout_s": 0}, "invalid timeout: 0"),
        ({"budget_s": 0}, "invalid budget: 0"),
        ({"budget_s": 10**9}, "invalid budget: 1000000000"),
        ({"settings": {"x": float("nan")}}, "invalid settings"),
        ({"history": [[1, 2, 3]]}, "invalid candles"),
    ],
)
def test_invalid_options_fail_every_step(options: dict, error: str) -> None:
    params = {"code": WINDOW, "settings": {}, "history": [], **options}
    with strategy_session(**params) as session:
        first, second = session.step([CANDLES[0]]), session.step([CANDLES[1]])

    assert first.error.startswith(error)
    assert second.error.startswith(f"session already ended: {error}")


def test_require_isolation_refuses_without_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "bwrap_status", lambda: (False, "bwrap is not installed"))

    results, _ = run_session(WINDOW, CANDLES[:1], require_isolation=True)

    assert results[0] == StepResult(
        False, None, "isolation required but bubblewrap is not usable: bwrap is not installed", True
    )


def test_without_a_zygote_a_session_runs_cold(monkeypatch: pytest.MonkeyPatch) -> None:
    # given an rlimit zygote that cannot start
    def get_zygote(mode: str) -> zygote_client.Zygote:
        raise zygote_client.ZygoteError("sandbox did not start (exit code 1)")

    monkeypatch.setattr("strategies.sandbox.session.get_zygote", get_zygote)

    # when a session runs
    results, session = run_session(WINDOW, CANDLES[3:5], CANDLES[:3], isolation_mode="rlimit")

    # then each step is a cold execution, with the same values
    assert session.isolation == "rlimit"
    assert [r.value["n"] for r in results if r.value] == [4, 5]


# --------------------------------------------------------------------------- look-ahead


LOOK_AHEAD = """
import fcntl, gc, os, sys
import numpy as np

def _timestamps(obj):
    # Anything that could hold packed or unpacked candles: their open times.
    try:
        return _open_times(obj)
    except ValueError:  # e.g. a released memoryview
        return None

def _open_times(obj):
    if isinstance(obj, np.ndarray) and obj.dtype == np.float64 and obj.ndim == 2 \\
            and obj.shape[1] == 6 and obj.size:
        return obj[:, 0]
    if isinstance(obj, (bytes, bytearray, memoryview)) and len(obj) >= 48:
        raw = bytes(obj)
        rows = np.frombuffer(raw[: len(raw) // 48 * 48], dtype="<f8").reshape(-1, 6)
        return rows[:, 0]
    return None

def _candidates():
    frame = sys._getframe()
    while frame is not None:  # every frame of the executor, its locals included
        yield from frame.f_locals.values()
        frame = frame.f_back
    for obj in gc.get_objects():  # and everything reachable from a tracked object
        yield obj
        yield from gc.get_referents(obj)

def generate_signal(candles, settings):
    flags = fcntl.fcntl(0, fcntl.F_GETFL)
    fcntl.fcntl(0, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    try:
        pending = len(os.read(0, 1 << 20))
    except BlockingIOError:
        pending = 0
    finally:
        fcntl.fcntl(0, fcntl.F_SETFL, flags)
    seen, newest_found = 0, 0.0
    for obj in _candidates():
        times = _timestamps(obj)
        if times is None:
            continue
        plausible = times[(times >= settings["first"]) & (times <= settings["last"])]
        if plausible.size:
            seen += 1
            newest_found = max(newest_found, float(plausible.max()))
    newest = candles["timestamp"].iloc[-1].value // 10**6
    return {"pending": pending, "seen": seen, "newest": newest, "newest_found": newest_found}
"""


def test_a_step_cannot_find_any_later_candle(mode: str) -> None:
    # given a strategy that looks for candles after its own: unread bytes on its candle
    # socket, and any array or buffer in its process (frames and the garbage collector's
    # objects) holding candle times
    settings = {"first": CANDLES[0][0], "last": CANDLES[-1][0]}

    # when it is stepped through a backtest
    results, _ = run_session(
        LOOK_AHEAD, CANDLES[50:55], CANDLES[:50], settings=settings, isolation_mode=mode
    )

    # then at every step it found the candles up to its own (the search works) and none after
    for row, result in zip(CANDLES[50:55], results, strict=True):
        assert result.ok, result.error
        value = result.value
        assert value is not None
        assert value["pending"] == 0
        assert value["seen"] > 0
        assert value["newest"] == row[0]
        assert value["newest_found"] == row[0]


# --------------------------------------------------------------------------- hostile


def _at_third_step(body: str) -> str:
    lines = "".join(f"        {line}\n" for line in body.splitlines())
    return (
        "import os, signal, socket, subprocess\n\ndef generate_signal(c, s):\n"
        f"    if len(c) == 3:\n{lines}    return {{'n': len(c)}}\n"
    )


HOSTILE = [
    ("fork bomb", "while True:\n    os.fork()", "exception: PermissionError: [Errno 1]", 6),
    ("subprocess", "subprocess.run(['true'])", "exception: PermissionError: [Errno 1]", 5),
    ("kill parent", "os.kill(os.getppid(), signal.SIGKILL)", "exception: PermissionError", 5),
    ("kill worker", "os.kill(WORKER, signal.SIGKILL)", "exception: PermissionError", 5),
    ("kill all", "os.kill(-1, signal.SIGKILL)", "exception: PermissionError", 5),
    (
        "network",
        "socket.create_connection(('127.0.0.1', 6379), timeout=1)",
        "exception: PermissionError: [Errno 1]",
        5,
    ),
    ("memory", "x = []\nwhile True:\n    x.append(b'x' * 10**7)", "memory limit exceeded", None),
]


@pytest.mark.parametrize(
    ("body", "error", "line"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_strategies_fail_safely_inside_a_session(
    mode: str, body: str, error: str, line: int | None
) -> None:
    # given a strategy that behaves for two steps, then turns hostile
    code = _at_third_step(body.replace("WORKER", str(os.getpid())))

    # when it is stepped through a session
    results, _ = hostile_session(code, mode, CANDLES[:4], memory_mb=300)

    # then the hostile step fails with a readable error, and everyone survives it
    assert [r.value for r in results[:2]] == [{"n": 1}, {"n": 2}]
    assert results[2].error.startswith(error), results[2].error
    if line is not None:
        assert f"(line {line})" in results[2].error
    assert results[3].error.startswith("session already ended: ")


def test_files_outside_stay_unreadable_inside_a_session(mode: str) -> None:
    if mode == "rlimit" and not LANDLOCK:
        pytest.skip("without bubblewrap and without Landlock the host file system is visible")
    targets = [
        str(PROJECT_ROOT / "config" / "settings" / "base.py"),
        str(Path(__file__).resolve()),
        f"/proc/{os.getpid()}/environ",
        "/etc/shadow",
    ]
    code = f"""
    def generate_signal(c, s):
        out = {{}}
        for path in {targets!r}:
            try:
                with open(path, "rb") as fh:
                    out[path] = "read %d bytes" % len(fh.read())
            except OSError as exc:
                out[path] = type(exc).__name__
        return out
    """

    results, _ = hostile_session(code, mode, CANDLES[:2])

    for result in results:
        assert result.ok, result.error
        assert result.value is not None
        assert all(not v.startswith("read") for v in result.value.values()), result.value


def test_a_session_dies_with_the_process_that_started_it(mode: str) -> None:
    # given a worker with a session whose strategy sleeps in a step (no CPU limit would
    # ever stop it), killed with SIGKILL (no cleanup at all)
    script = textwrap.dedent(f"""
        import json, os, signal, threading, time
        from strategies.sandbox import strategy_session
        from tests.strategies.test_sandbox import CANDLES, _descendants
        from strategies.sandbox import run_strategy
        code = "import time\\ndef generate_signal(c, s):\\n    time.sleep(3600)\\n"
        assert run_strategy(code="def generate_signal(c, s):\\n    pass\\n", candles=CANDLES,
                            settings={{}}, isolation_mode={mode!r}).ok  # the zygote is up
        def run():
            with strategy_session(code=code, settings={{}}, history=CANDLES[:5],
                                  timeout_s=600, isolation_mode={mode!r}) as session:
                session.step([CANDLES[5]])
        threading.Thread(target=run, daemon=True).start()
        time.sleep(1.5)
        print(json.dumps(sorted(_descendants(os.getpid()))), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_CANARY_SECRET"}

    # when it dies
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env, capture_output=True, check=False
    )

    # then nothing of its sandbox survives it
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    sandbox_pids = json.loads(proc.stdout)
    assert len(sandbox_pids) >= 3  # zygote, supervisor, executor at least
    assert _eventually(lambda: not any(os.path.exists(f"/proc/{p}") for p in sandbox_pids))


def test_sessions_run_side_by_side_with_single_executions(mode: str) -> None:
    # given two sessions open at once on the same zygote
    with (
        strategy_session(code=WINDOW, settings={"a": 1}, history=[], isolation_mode=mode) as one,
        strategy_session(code=WINDOW, settings={"b": 2}, history=[], isolation_mode=mode) as two,
    ):
        # when they are stepped in turn, with a single execution in between
        first = one.step([CANDLES[0]])
        single = run_strategy(code=WINDOW, candles=CANDLES[:9], settings={}, isolation_mode=mode)
        second = two.step([CANDLES[1]])

    # then each got its own candles and settings
    assert first.value is not None and first.value["settings"] == {"a": 1}
    assert second.value is not None and second.value["last"] == CANDLES[1][4]
    assert second.value["settings"] == {"b": 2}
    assert single.ok and single.value is not None and single.value["n"] == 9


# --------------------------------------------------------------------------- run_signals


def signals(code: str, candles: list[list[float]] | None = None, **options: object):  # type: ignore[no-untyped-def]
    params: dict = {"settings": {}, "timeout_s": 10.0}
    params.update(options)
    rows = CANDLES[:20] if candles is None else candles
    return run_signals(code=textwrap.dedent(code), candles=rows, **params)


def test_run_signals_with_a_list(any_mode: str) -> None:
    code = """
    def generate_signals(candles, settings):
        out = [None] * len(candles)
        out[3] = {"signal": "LONG", "price": float(candles["close"].iloc[3]), "stopLoss": 1.0}
        out[7] = {"signal": "HOLD", "metadata": {"n": len(candles), **settings}}
        return out
    """

    result = signals(code, settings={"k": 1}, isolation_mode=any_mode)

    assert result.ok, result.error
    expected: list = [None] * 20
    expected[3] = {"signal": "LONG", "price": CANDLES[3][4], "stopLoss": 1.0}
    expected[7] = {"signal": "HOLD", "metadata": {"n": 20, "k": 1}}
    assert result.value == {"signals": expected}


def test_run_signals_with_a_series_of_signal_strings() -> None:
    code = """
    import numpy as np
    import pandas as pd
    def generate_signals(candles, settings):
        s = pd.Series([None] * len(candles), dtype=object)
        s[1], s[2], s[3], s[4] = "LONG", "HOLD", np.nan, "exit_long"
        return s
    """

    result = signals(code, CANDLES[:6])

    assert result.ok, result.error
    assert result.value == {
        "signals": [None, {"signal": "LONG"}, None, None, {"signal": "exit_long"}, None]
    }


def test_run_signals_with_a_dataframe_leaves_missing_values_out() -> None:
    code = """
    import numpy as np
    import pandas as pd
    def generate_signals(candles, settings):
        close = candles["close"]
        frame = pd.DataFrame({"signal": "HOLD", "price": close, "stopLoss": np.nan,
                              "takeProfit": None}, index=candles.index)
        frame.loc[2, ["signal", "stopLoss"]] = ["LONG", 1.0]
        frame.loc[4, ["signal", "takeProfit"]] = ["SHORT", 0.5]
        frame.loc[5, "signal"] = np.nan
        return frame
    """

    result = signals(code, CANDLES[:6])

    assert result.ok, result.error
    assert result.value == {
        "signals": [
            None,
            None,
            {"signal": "LONG", "price": CANDLES[2][4], "stopLoss": 1.0},
            None,
            {"signal": "SHORT", "price": CANDLES[4][4], "takeProfit": 0.5},
            None,
        ]
    }


def test_run_signals_sees_every_candle_without_a_lookback_cut() -> None:
    code = """
    LOOKBACK = 5
    def generate_signals(c, s):
        return [{"n": len(c)}] + [None] * (len(c) - 1)
    """
    candles = [[START_MS + i * 60_000, 1.0, 2.0, 0.5, 1.5, 10.0] for i in range(6000)]

    result = signals(code, candles)

    assert result.ok, result.error
    assert result.value is not None and result.value["signals"][0] == {"n": 6000}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("return [None] * 10", "generate_signals returned 10 rows for 20 candles"),
        ("return pd.Series(['LONG'] * 21)", "generate_signals returned 21 rows for 20 candles"),
        ("return 3", "invalid result: generate_signals must return a list, a pandas Series or"),
        ("return [None] * 19 + ['LONG']", "invalid result: row 19 is a str, not a dict or None"),
        ("return pd.Series([1.0] * 20)", "invalid result: row 0: signal must be a string, got"),
        (
            "return pd.DataFrame({'signal': ['LONG'] * 20, 'sma': 1.0})",
            "invalid result: generate_signals returned the columns ['signal', 'sma']",
        ),
        (
            "return [None] * 5 + [{'signal': 'LONG', 'price': float('inf')}] + [None] * 14",
            "invalid result: non-finite number (row 5)",
        ),
        (
            "return pd.DataFrame({'signal': ['LONG'] * 20, 'price': [1.0] * 19 + [np.inf]})",
            "invalid result: non-finite number (row 19)",
        ),
        (
            "return [{'x': object()}] * 20",
            "invalid result: object is not JSON serializable (row 0)",
        ),
        ("raise KeyError('close')", "exception: KeyError: 'close' (line 5)"),
    ],
)
def test_run_signals_rejects_what_it_cannot_use(body: str, error: str) -> None:
    code = f"import numpy as np\nimport pandas as pd\n\ndef generate_signals(c, s):\n    {body}\n"

    result = signals(code)

    assert not result.ok
    assert result.error.startswith(error), result.error
    assert result.value is None


def test_run_signals_without_generate_signals() -> None:
    result = signals(WINDOW)

    assert not result.ok
    assert result.error == "invalid strategy: generate_signals(candles, settings) is not defined"


def test_run_signals_result_budget_grows_with_the_rows() -> None:
    # given 4000 candles, each row's signal carrying 500 bytes of metadata (2 MB in all, more
    # than a single result's 1 MiB) and then 1100 bytes (more than 1 KiB per row)
    candles = [[START_MS + i * 60_000, 1.0, 2.0, 0.5, 1.5, 10.0] for i in range(4000)]
    code = (
        "def generate_signals(c, s):\n    return [{'signal': 'HOLD', 'm': 'x' * s['n']}] * len(c)\n"
    )

    # when both run
    fits = signals(code, candles, settings={"n": 500})
    too_big = signals(code, candles, settings={"n": 1100})

    # then the first is returned whole, the second refused
    assert fits.ok, fits.error
    assert fits.value is not None and len(fits.value["signals"]) == 4000
    assert too_big.error == f"invalid result: larger than {4000 * 1024} bytes"


def test_run_signals_refuses_more_than_the_row_cap() -> None:
    import numpy as np

    candles = np.zeros((child.MAX_ROWS + 1, 6)).tolist()

    result = signals("def generate_signals(c, s):\n    return []\n", candles)

    assert result.error == f"too many candles: {child.MAX_ROWS + 1} (at most {child.MAX_ROWS})"


def test_run_signals_refuses_a_forged_result_frame(mode: str) -> None:
    # given a strategy writing its own "successful" result, with the wrong number of rows
    frame = json.dumps({"ok": True, "value": {"signals": [{"signal": "LONG"}]}})
    code = f"""
    import os
    def generate_signals(c, s):
        os.write(3, {frame.encode()!r})
        os._exit(0)
    """

    result = signals(code, isolation_mode=mode)

    assert result.error == "invalid result: malformed result frame"


def test_run_signals_hostile_memory_and_timeout(mode: str) -> None:
    memory = (
        "def generate_signals(c, s):\n    x = []\n    while True:\n        x.append(b'x' * 10**7)\n"
    )
    loop = "def generate_signals(c, s):\n    while True:\n        pass\n"

    assert signals(memory, memory_mb=300, isolation_mode=mode).error == (
        "memory limit exceeded (300 MiB)"
    )
    assert signals(loop, timeout_s=1.0, isolation_mode=mode).error == "timeout after 1.0 s"


# --------------------------------------------------------------------------- internals


def test_the_row_buffer_keeps_exact_windows_through_growth_and_the_row_cap() -> None:
    import numpy as np

    # given history just under the cap, then more steps than fit
    total = child.MAX_ROWS + 5000
    rows = np.arange(total * 6, dtype="<f8").reshape(-1, 6)
    start = child.MAX_ROWS - 10
    buffer = child.RowBuffer(rows[:start].tobytes())

    # when rows are appended one or several at a time past the cap
    windows_ok = []
    position = start
    for end in [*range(start + 1, start + 40), start + 3000, total]:
        buffer.append(rows[position:end].tobytes())
        position = end
        windows_ok.append(np.array_equal(buffer.newest(50), rows[end - 50 : end]))

    # then the newest rows are always the latest ones, in order, and the cap holds
    assert all(windows_ok)
    assert np.array_equal(buffer.newest(child.MAX_LOOKBACK), rows[total - child.MAX_LOOKBACK :])
    assert len(buffer.newest(10**9)) <= child.MAX_ROWS


def test_the_session_benchmark_measures_both_strategies() -> None:
    from strategies.sandbox import bench_session

    figures = bench_session.bench(candles=CANDLES[:40], runs=1, mode="rlimit")

    assert [f.name for f in figures] == ["trivial", "sma(10,30)"]
    assert all(f.steps == 40 and f.session_s > 0 and f.plain_s > 0 for f in figures)
    assert "x" in figures[0].line()
