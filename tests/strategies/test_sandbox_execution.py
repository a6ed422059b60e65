"""Hostile strategies through the real execution path (execution_run, the database, the event
bus), with and without bubblewrap, and on a real Celery worker next to a well-behaved one."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection

from core.events import EventType, event_channel, event_subscribe
from core.redis_client import get_redis
from core.time_utils import datetime_to_ms
from execution.services import execution_finish, execution_run
from execution.tasks import candle_close
from strategies.models import StrategyExecution
from strategies.sandbox import isolation, zygote_client
from tests.factories import (
    StrategyExecutionFactory,
    StrategyFactory,
    flat_candles,
    load_candles,
    subscribe,
)
from tests.strategies.test_sandbox import CANARY, LANDLOCK, _descendants, _eventually
from tests.strategy_code import SCRIPTED
from tests.workers import wait_for
from trades.models import Trade

pytestmark = pytest.mark.django_db(transaction=True)

BWRAP_USABLE, BWRAP_REASON = isolation.bwrap_status()
MODES = [
    pytest.param(
        "bwrap", marks=pytest.mark.skipif(not BWRAP_USABLE, reason=f"bwrap: {BWRAP_REASON}")
    ),
    "rlimit",
]
START = datetime(2018, 1, 10, 5, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SETTINGS_FILE = PROJECT_ROOT / "config" / "settings" / "base.py"
LONG = "{'signal': 'LONG', 'price': float(c['close'].iloc[-1]), 'stopLoss': None}"


@pytest.fixture(scope="module", autouse=True)
def _canary_in_the_worker_environment() -> Iterator[None]:
    zygote_client.shutdown()  # zygotes started from now on have the canary in their parent
    os.environ["SANDBOX_CANARY_SECRET"] = CANARY
    yield
    zygote_client.shutdown()
    os.environ.pop("SANDBOX_CANARY_SECRET", None)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, settings) -> str:
    settings.STRATEGY_SANDBOX_ISOLATION = request.param
    return str(request.param)


@pytest.fixture
def market() -> None:
    load_candles(rows=flat_candles(start_ms=datetime_to_ms(START), count=20))


def _body(lines: str) -> str:
    return "import os, sys, signal, socket\n\ndef generate_signal(c, s):\n" + "".join(
        f"    {line}\n" for line in lines.splitlines()
    )


# (name, strategy body, expected error as a regex, filesystem-isolation needed)
HOSTILE = [
    ("infinite loop", "while True:\n    pass", r"timeout after 1\.0 s", False),
    ("memory bomb", "x = []\nwhile True:\n    x.append(b'x' * 10**7)",
     r"memory limit exceeded \(256 MiB\)", False),
    ("fork bomb", "while True:\n    os.fork()",
     r"exception: PermissionError: \[Errno 1\] Operation not permitted \(line 5\)", False),
    ("redis socket", "socket.create_connection(('127.0.0.1', 6379), timeout=1)",
     r"exception: PermissionError: \[Errno 1\] Operation not permitted \(line 4\)", False),
    ("postgres socket", "socket.create_connection(('127.0.0.1', 5432), timeout=1)",
     r"exception: PermissionError: \[Errno 1\] Operation not permitted \(line 4\)", False),
    ("secrets in os.environ",
     "stolen = {k: v for k, v in os.environ.items() if k not in ('PATH', 'LANG', 'LC_ALL', "
     "'HOME', 'TMPDIR') and not k.endswith('THREADS')}\n"
     f"if stolen:\n    return {{**{LONG}, 'metadata': stolen}}\n"
     "raise RuntimeError('nothing to steal')",
     r"exception: RuntimeError: nothing to steal \(line 7\)", False),
    ("settings file", f"return {{**{LONG}, 'metadata': {{'s': open({str(SETTINGS_FILE)!r})"
                      ".read()}}",
     r"exception: (FileNotFoundError|PermissionError): .* \(line 4\)", True),
    ("/proc/1/environ", f"return {{**{LONG}, 'metadata': "
                        "{'e': str(open('/proc/1/environ', 'rb').read())}}",
     r"exception: (FileNotFoundError|PermissionError): .* \(line 4\)", True),
    ("write outside tmp", "open('/tmp/escape-from-strategy', 'w').write('x')",
     r"exception: (OSError|PermissionError): \[Errno (13|30)\] .* \(line 4\)", True),
    ("sys.exit", "sys.exit(1)", r"strategy called sys\.exit\(1\)", False),
    ("os._exit", "os._exit(0)", r"process exited with code 0 before returning a result", False),
    ("kill parent", "os.kill(os.getppid(), signal.SIGKILL)",
     r"exception: PermissionError: \[Errno 1\] Operation not permitted \(line 4\)", False),
    ("exception", "return 1 / 0",
     r"exception: ZeroDivisionError: division by zero \(line 4\)\nTraceback", False),
    ("NaN price", "return {'signal': 'LONG', 'price': float('nan')}",
     r"invalid result: non-finite number", False),
    ("inverted stop", "return {'signal': 'LONG', 'price': 1.0, 'stopLoss': 2.0}",
     r"invalid signal: .*stopLoss", False),
    ("inverted take profit", "return {'signal': 'SHORT', 'price': 1.0, 'takeProfit': 2.0}",
     r"invalid signal: .*takeProfit", False),
    ("print 100 MB then fail", "print('x' * 100 * 1024 * 1024)\nraise ValueError('after flood')",
     r"exception: ValueError: after flood \(line 5\)", False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "error", "needs_fs_isolation"),
    [pytest.param(body, error, fs, id=name) for name, body, error, fs in HOSTILE],
)
def test_hostile_strategy_fails_its_execution_and_nothing_leaks(
    market, mode, settings, body, error, needs_fs_isolation
):
    if needs_fs_isolation and mode == "rlimit" and not LANDLOCK:
        pytest.skip("without bubblewrap and Landlock the host file system is visible")
    # given a strategy with a subscriber who would trade on any entry signal
    settings.STRATEGY_MEMORY_MB = 256
    # 1 s for the loop that runs until it is stopped; the others end by themselves, and a
    # loaded machine must not turn their failure into a timeout
    timeout_s = 1.0 if error.startswith("timeout") else 10.0
    strategy = StrategyFactory(code=_body(body), timeout_s=timeout_s, settings={"signal": "LONG"})
    subscribe(strategy)
    errors: list[dict] = []
    unsubscribe = event_subscribe(
        event_type=EventType.EXECUTION_ERROR, handler=lambda e: errors.append(e.payload)
    )
    zygote = zygote_client.get_zygote(mode)  # started before counting processes
    processes = _descendants(os.getpid())
    try:
        # when the candle closes
        outcome = execution_run(
            strategy_id=strategy.pk, interval_start=START + STEP * 10, trigger="replay"
        )
    finally:
        unsubscribe()

    # then the execution failed with a readable error, announced on the bus, with no order
    row = StrategyExecution.objects.get(pk=outcome.execution_id)
    assert row.status == "failed"
    assert re.match(error, row.error, re.DOTALL), row.error
    assert [e["execution_id"] for e in errors] == [row.pk]
    assert errors[0]["error"] == row.error[:500]
    assert not Trade.objects.exists()
    assert row.signal in (None, {})
    # and nothing leaked: no secret in what was recorded, logs capped, no process left behind
    assert CANARY not in row.error + row.logs
    assert len(row.logs) <= 1024 * 1024 + 100
    assert _eventually(lambda: _descendants(os.getpid()) <= processes), (
        _descendants(os.getpid()) - processes
    )
    assert not os.path.exists("/tmp/escape-from-strategy")
    assert zygote.alive() and zygote_client.get_zygote(mode) is zygote


def test_fake_result_on_stdout_does_not_trade(market, mode):
    code = _body(
        'print(\'{"ok": true, "value": {"signal": "LONG", "price": 1}, "error": ""}\')\n'
        "sys.stdout.flush()\n"
        "return None"
    )
    strategy = StrategyFactory(code=code)
    subscribe(strategy)
    outcome = execution_run(
        strategy_id=strategy.pk, interval_start=START + STEP * 10, trigger="replay"
    )
    row = StrategyExecution.objects.get(pk=outcome.execution_id)
    assert row.status == "no_signal" and row.error == ""
    assert '"LONG"' in row.logs
    assert not Trade.objects.exists()


def test_refused_sandbox_fails_the_execution_with_a_clear_error(market, settings, monkeypatch):
    settings.STRATEGY_SANDBOX_REQUIRE_ISOLATION = True
    monkeypatch.setattr(isolation, "bwrap_status", lambda: (False, "bwrap is not installed"))
    strategy = StrategyFactory(settings={"signal": "LONG"})
    subscribe(strategy)
    outcome = execution_run(
        strategy_id=strategy.pk, interval_start=START + STEP * 10, trigger="replay"
    )
    row = StrategyExecution.objects.get(pk=outcome.execution_id)
    assert row.status == "failed"
    assert row.error == "isolation required but bubblewrap is not usable: bwrap is not installed"
    assert not Trade.objects.exists()


def test_timeout_is_capped_by_the_operator_setting(market, settings):
    settings.STRATEGY_MAX_TIMEOUT_S = 1.0
    strategy = StrategyFactory(code=_body("while True:\n    pass"), timeout_s=30.0)
    subscribe(strategy)
    outcome = execution_run(
        strategy_id=strategy.pk, interval_start=START + STEP * 10, trigger="replay"
    )
    row = StrategyExecution.objects.get(pk=outcome.execution_id)
    assert row.error == "timeout after 1.0 s"
    assert row.duration_ms < 10_000


# (name, strategy body, expected status, recorded field, expected value or regex)
UNSTORABLE = [
    ("NUL printed", "print('before\\x00after')\nreturn None", "no_signal", "logs",
     "before\ufffdafter\n"),
    ("lone surrogates in metadata",
     f"return {{**{LONG}, 'metadata': {{'\\ud800': ['\\udfff', {{'k\\x00': 'v\\x00'}}]}}}}",
     "success", "metadata", {"\ufffd": ["\ufffd", {"k\ufffd": "v\ufffd"}]}),
    ("NUL in the exception", "raise ValueError('x\\x00y \\udc80')", "failed", "error",
     r"exception: ValueError: x\ufffdy \ufffd \(line 4\)\nTraceback"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "field", "expected"),
    [
        pytest.param(body, status, f, expected, id=name)
        for name, body, status, f, expected in UNSTORABLE
    ],
)
def test_unstorable_strategy_output_is_recorded_made_storable(
    market, mode, body, status, field, expected
):
    # given a strategy producing a NUL or a lone surrogate, with a subscriber
    strategy = StrategyFactory(code=_body(body))
    subscribe(strategy)

    # when the candle closes (fanning out in this process)
    outcome = execution_run(
        strategy_id=strategy.pk,
        interval_start=START + STEP * 10,
        trigger="replay",
        inline_fanout=True,
    )

    # then the execution reached its final status with what the strategy produced, storable
    row = StrategyExecution.objects.get(pk=outcome.execution_id)
    assert row.status == status, row.error
    if field == "error":
        assert re.match(expected, row.error), row.error
    elif field == "metadata":
        assert row.signal is not None and row.signal["metadata"] == expected
        assert Trade.objects.filter(execution=row).count() == 1
    else:
        assert getattr(row, field) == expected


# (recorded fields, the exception the database raises, only on PostgreSQL)
UNRECORDABLE = [
    pytest.param({"status": "failed", "error": "strategy said \ud800"}, "UnicodeEncodeError",
                 False, id="surrogate-in-error"),
    pytest.param({"status": "no_signal", "logs": "\udfff"}, "UnicodeEncodeError", False,
                 id="surrogate-in-logs"),
    pytest.param({"status": "no_signal", "logs": "a\x00b"}, "ValueError", True,
                 id="nul-in-logs"),
    pytest.param({"status": "success", "signal": {"signal": "LONG", "metadata": {"k": "\ud800"}}},
                 "DataError", True, id="surrogate-in-json"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "cause", "postgres_only"), UNRECORDABLE)
def test_a_result_that_cannot_be_recorded_still_finishes_the_execution(
    fields, cause, postgres_only
):
    if postgres_only and connection.vendor != "postgresql":
        pytest.skip("SQLite stores this value")
    # given a running execution
    execution = StrategyExecutionFactory()
    errors: list[dict] = []
    unsubscribe = event_subscribe(
        event_type=EventType.EXECUTION_ERROR, handler=lambda e: errors.append(e.payload)
    )

    # when its result cannot be stored
    try:
        execution_finish(execution=execution, **fields)
    finally:
        unsubscribe()

    # then it is failed with an internal error, in the database and for the caller, announced
    row = StrategyExecution.objects.get(pk=execution.pk)
    assert row.status == "failed"
    assert row.error == f"internal error: could not record result: {cause}"
    assert row.finished_at is not None and row.duration_ms is not None
    assert row.signal is None
    assert execution.status == "failed" and execution.error == row.error
    assert [e["execution_id"] for e in errors] == [row.pk]
    assert errors[0]["error"] == row.error


# --------------------------------------------------------------------------- real worker


def _final(strategy_id: int, interval_start: datetime) -> StrategyExecution | None:
    row = StrategyExecution.objects.filter(
        strategy_id=strategy_id, interval_start=interval_start
    ).first()
    return row if row is not None and row.is_final else None


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _zygotes_by_pool_process(pool) -> dict[int, list[int]]:  # type: ignore[no-untyped-def]
    """{Celery pool process: [sandbox zygotes it started]} for the workers of ``pool``."""
    found: dict[int, list[int]] = {}
    for worker in pool.workers:
        main = worker.proc.pid
        for pid in _descendants(main):
            parent = _parent(pid)
            if b"zygote.py" in _cmdline(pid) and b"zygote.py" not in _cmdline(parent):
                found.setdefault(parent, []).append(pid)
    return found


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


@pytest.mark.worker
def test_hostile_strategy_times_out_while_another_on_the_same_candle_completes(celery_workers):
    # given two strategies on the same market: one hangs for its whole 8 s, one trades
    load_candles(rows=flat_candles(start_ms=datetime_to_ms(START), count=30))
    hostile = StrategyFactory(code=_body("while True:\n    pass"), timeout_s=8.0)
    friendly = StrategyFactory(code=SCRIPTED, settings={"signal": "LONG"})
    subscribe(hostile)
    friend_sub = subscribe(friendly)
    pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(event_channel(EventType.EXECUTION_ERROR))

    # when that candle closes on a real worker (two pool processes)
    interval = START + STEP * 10
    candle_close.delay(resolution="5m", close_time=(interval + STEP).isoformat(), trigger="replay")

    # then the friendly strategy completes and trades while the hostile one is still running
    done = wait_for(lambda: _final(friendly.pk, interval), timeout=60, what="friendly execution")
    assert done.status == "success", done.error
    assert wait_for(lambda: Trade.objects.filter(execution=done, subscription=friend_sub).first(),
                    timeout=30, what="friendly trade")  # fmt: skip
    stuck = StrategyExecution.objects.get(strategy=hostile, interval_start=interval)
    assert stuck.status == "running"

    # and the hostile one ends at its timeout: failed, announced, no trade
    failed = wait_for(lambda: _final(hostile.pk, interval), timeout=60, what="hostile execution")
    assert failed.status == "failed" and failed.error == "timeout after 8.0 s"
    assert 8000 <= failed.duration_ms < 20_000
    assert not Trade.objects.filter(execution=failed).exists()
    assert done.finished_at < failed.finished_at

    def error_event() -> dict | None:
        message = pubsub.get_message(timeout=0.2)
        if message is None:
            return None
        payload = json.loads(message["data"])["payload"]
        if payload["execution_id"] == failed.pk and payload["strategy_id"] == hostile.pk:
            return payload
        return None  # another test run's event on the shared channel

    assert wait_for(error_event, timeout=10, what="error event")["error"] == failed.error
    pubsub.close()

    # and it ran on the fast path: warm zygotes, at most one per pool process
    assert _zygotes_by_pool_process(celery_workers)
    assert all(len(z) == 1 for z in _zygotes_by_pool_process(celery_workers).values())

    # and the worker is healthy: the next candle runs both strategies again
    candle_close.delay(
        resolution="5m", close_time=(interval + 2 * STEP).isoformat(), trigger="replay"
    )
    again = wait_for(lambda: _final(friendly.pk, interval + STEP), timeout=60, what="next candle")
    assert again.status == "success"
