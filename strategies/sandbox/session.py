"""A sandbox session: one executor for a whole backtest, fed closed candles one step at a time.

    with strategy_session(code=..., settings=..., history=warm_up_rows) as session:
        for row in rows:
            result = session.step([row])  # StepResult(ok, value, error, sandbox_failure)
    session.logs, session.cpu_ms          # once the block is left

Each step appends the candles to the session's rows and runs ``generate_signal`` once on the
newest LOOKBACK of them, in a fresh copy of the strategy's module: the window, the module
and so the value are exactly what ``run_strategy`` gives on the same rows (no module state
carries over between steps, as none does between live executions).

* **No look-ahead, by construction.** The executor is the zygote's usual one (same
  namespaces, seccomp, Landlock, rlimits, no network, dies with its parent) with a socket to
  this process as fd 0 (see child.run_session). Candles travel on it in lockstep: the next
  ones are sent only once the answer for the previous step is in, so the executor never
  holds (in memory, in a socket buffer, anywhere) a candle before its step.
* **Started in the background.** ``strategy_session`` returns once the zygote took the
  request; the first step waits for the executor's greeting, so the caller may work while
  it starts (a failure to start is that first step's error).
* **Failures end the session.** An exception, an invalid value, a timeout (``timeout_s``, per
  step: the executor is killed at once) or the session's ``budget_s`` (wall clock from the
  start, and CPU) running out: that step returns the error, every later one a refusal
  naming it. ``session.error`` keeps it.
* **Cold mode** (``isolation_mode="cold"``, or no zygote can start): each step is one
  single-use ``run_strategy`` call in a fresh process on the session's newest MAX_LOOKBACK
  rows. Slow (a process start per step) but the same values and the same isolation.

A session belongs to one thread. No Django here."""

from __future__ import annotations

import contextlib
import math
import select
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any, Protocol

from . import child
from .protocol import (
    MAX_LOG_BYTES,
    MAX_RESULT_BYTES,
    RawOutcome,
    RequestError,
    build_request,
    describe_exit,
    format_logs,
    pack_candles,
    parse_result,
)
from .result import StepResult
from .runner import (
    SETUP_FAILED,
    _zygote_unavailable,
    check_timeout,
    cold_read_paths,
    execute,
    interpret,
    resolve_mode,
)
from .zygote_client import PARENT_GRACE_S, Zygote, ZygoteError, discard_zygote, get_zygote

# Hard ceiling of a session's budget whatever the caller asks.
MAX_BUDGET_S = 24 * 3600.0
# What the executor may take to be ready (fork, namespaces, confinement): not the strategy's.
READY_TIMEOUT_S = PARENT_GRACE_S
# How long an executor told to finish may take to report before it is killed.
FINISH_GRACE_S = 2.0
# How long a supervisor told to abort (kill its executor) may take to report.
ABORT_GRACE_S = 5.0
# How long the executor polls for the next candles before it sleeps (child.SESSION_POLL_S).
EXECUTOR_POLL_S = child.SESSION_POLL_S
# An answer: one value (at most MAX_RESULT_BYTES) or one error, with its JSON wrapping.
MAX_ANSWER_BYTES = MAX_RESULT_BYTES + 64 * 1024
_FRAME_HEADER = struct.Struct(">I")
_ROW = struct.Struct("<6d")
# The answer of a step that returned None, as the executor words it (most steps hold).
_HOLD_ANSWER = b'{"ok": true, "value": null}'
_HOLD = StepResult(True, None, "")


class _Backend(Protocol):
    def send(self, packed: bytes) -> StepResult | None: ...

    def receive(self) -> StepResult: ...

    def answered(self) -> bool: ...

    def close(self, abort: bool) -> tuple[str, float]: ...


class StrategySession:
    """What ``strategy_session`` yields. ``logs`` and ``cpu_ms`` are set once it is closed;
    ``error`` is what ended it early ('' while it runs, and after a normal end)."""

    def __init__(
        self,
        isolation: str,
        backend: _Backend | None,
        failure: StepResult | None,
        starting: _ZygoteBackend | None = None,
    ):
        self.isolation = isolation  # the mode actually used: bwrap or rlimit
        self.logs = ""
        self.cpu_ms = 0.0
        self.error = ""
        self.steps = 0  # steps answered (failed ones included)
        self._backend = backend
        self._failure = failure  # what ended it, not yet returned by a step
        self._closed = False
        self._sent = False  # candles handed over and not yet answered
        # An executor still starting: its greeting is awaited at the first send, so that the
        # caller works (a vectorised backtest runs generate_signals) while it starts.
        self._starting = starting
        if failure is not None:
            self.error = failure.error

    def step(self, rows: list[list[float]]) -> StepResult:
        """Append these closed candles (usually one) and run generate_signal once on the
        newest LOOKBACK rows."""
        failure = self.send(rows)
        return failure if failure is not None else self.receive()

    def send(self, rows: list[list[float]]) -> StepResult | None:
        """The first half of a step: hand over the candles; None, or why it failed.

        A caller may work between ``send`` and ``receive`` (a backtest values its account
        while the strategy computes the next signal); it sends the next candles only after
        receiving, so the executor never holds a candle that had not closed for it."""
        if self._starting is not None:
            self._await_start(self._starting)
        if self._backend is None or self._closed or self.error or self._sent:
            return self._refusal()
        try:
            packed = _pack_rows(rows)
        except RequestError as exc:
            return self._end(StepResult(False, None, str(exc), True))
        failure = self._backend.send(packed)
        if failure is not None:
            return self._end(failure)
        self._sent = True
        return None

    def receive(self) -> StepResult:
        """The second half: generate_signal's answer to the candles sent."""
        if self._backend is None or self._closed or self.error or not self._sent:
            return self._refusal()
        self._sent = False
        result = self._backend.receive()
        self.steps += 1
        return result if result.ok else self._end(result)

    def answered(self) -> bool:
        """Whether ``receive`` would return at once: the answer (or the end) is in, or
        nothing is awaited."""
        if self._backend is None or self._closed or self.error or not self._sent:
            return True
        return self._backend.answered()

    def close(self, *, abort: bool = False) -> None:
        """End the session (``abort``: kill the executor rather than let it finish)."""
        if self._closed:
            return
        self._closed = True
        if self._backend is not None:
            self.logs, self.cpu_ms = self._backend.close(abort)

    def _await_start(self, backend: _ZygoteBackend) -> None:
        self._starting = None
        failure = backend.wait_ready()
        if failure is not None:
            self._failure, self.error = failure, failure.error
            self._backend_done()

    def _end(self, failure: StepResult) -> StepResult:
        self.error = failure.error
        self._backend_done()
        return failure

    def _backend_done(self) -> None:
        """A failed session's executor is gone or going: collect what it left now."""
        if self._backend is not None and not self._closed:
            self._closed = True
            self.logs, self.cpu_ms = self._backend.close(False)

    def _refusal(self) -> StepResult:
        if self._failure is not None:  # a session that could not start: its own error first
            failure, self._failure = self._failure, None
            return failure
        if self.error:
            reason = self.error.splitlines()[0]
            return StepResult(False, None, f"session already ended: {reason}")
        if not self._closed:
            state = "already sent, not yet received" if self._sent else "none were sent"
            return StepResult(False, None, f"out of order: candles {state}")
        return StepResult(False, None, "session already ended: it was closed")


def _pack_rows(rows: list[list[float]]) -> bytes:
    """pack_candles, without numpy for the usual single row (a step's main cost here)."""
    if isinstance(rows, list) and len(rows) == 1:
        with contextlib.suppress(TypeError, struct.error):
            return _ROW.pack(*rows[0])
    return pack_candles(rows)


@contextlib.contextmanager
def strategy_session(
    *,
    code: str,
    settings: dict[str, Any],
    history: list[list[float]],
    lookback: int | None = None,
    timeout_s: float = 30.0,
    budget_s: float = 600.0,
    memory_mb: int = 512,
    require_isolation: bool | None = None,
    isolation_mode: str | None = None,
) -> Iterator[StrategySession]:
    """A sandboxed executor of ``code`` for the block: see the module's docstring.

    ``history``: the candles before the first step (the newest child.MAX_ROWS kept);
    ``timeout_s``: per step; ``budget_s``: the whole session, wall clock from its start
    (the caller's time between steps included) and CPU. The other options are
    run_strategy's. Never raises for the sandbox's or the strategy's failures: they come
    back as failed steps."""
    session = open_session(
        code=code,
        settings=settings,
        history=history,
        lookback=lookback,
        timeout_s=timeout_s,
        budget_s=budget_s,
        memory_mb=memory_mb,
        require_isolation=require_isolation,
        isolation_mode=isolation_mode,
    )
    try:
        yield session
    except BaseException:
        session.close(abort=True)
        raise
    session.close()


def open_session(
    *,
    code: str,
    settings: dict[str, Any],
    history: list[list[float]],
    lookback: int | None = None,
    timeout_s: float = 30.0,
    budget_s: float = 600.0,
    memory_mb: int = 512,
    require_isolation: bool | None = None,
    isolation_mode: str | None = None,
) -> StrategySession:
    """strategy_session without the block: the caller must ``close()`` it."""
    mode, require, refusal = resolve_mode(require_isolation, isolation_mode)
    refusal = refusal or check_timeout(timeout_s) or _check_budget(budget_s)
    if refusal:
        return StrategySession(mode, None, StepResult(False, None, refusal, True))
    options = {"timeout_s": timeout_s, "budget_s": budget_s, "memory_mb": memory_mb}
    try:
        packed = pack_candles(history, keep=child.MAX_ROWS)
        payload = build_request(
            code=code,
            candles=None,
            packed=packed,
            settings=settings,
            lookback=lookback,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            read_paths=[],  # the zygote has its own; a cold step builds its own request
            session=True,
            budget_s=float(budget_s),
            poll_s=EXECUTOR_POLL_S,
        )
    except RequestError as exc:
        return StrategySession(mode, None, StepResult(False, None, str(exc)))
    request = _ColdRequest(code, settings, lookback, packed, options)
    return _start(payload, mode, require, request)


def _check_budget(budget_s: float) -> str:
    if not 0 < budget_s <= MAX_BUDGET_S:
        return f"invalid budget: {budget_s!r} (expected 0 < budget <= {MAX_BUDGET_S})"
    return ""


def _start(payload: bytes, mode: str, require: bool, request: _ColdRequest) -> StrategySession:
    """A session on this process's zygote for ``mode``, with the same fallbacks as
    runner.execute: bwrap -> rlimit (unless isolation is required) -> cold."""
    if mode == "cold":
        return StrategySession("rlimit", _ColdBackend(request, require), None)
    for attempt in range(2):
        try:
            zygote = get_zygote(mode)
        except ZygoteError as exc:
            fallback = _zygote_unavailable(mode, require, str(exc))
            if isinstance(fallback, RawOutcome):
                return StrategySession(mode, None, StepResult(False, None, fallback.error, True))
            return _start(payload, fallback, require, request)
        try:
            exec_sock, data_sock = zygote.open_session(payload)
        except (ZygoteError, OSError) as exc:
            discard_zygote(zygote)
            if attempt:
                return StrategySession(mode, None, StepResult(False, None, str(exc), True))
            continue
        return _ready(_ZygoteBackend(zygote, exec_sock, data_sock, request.options), mode)
    raise AssertionError("unreachable")


def _ready(backend: _ZygoteBackend, mode: str) -> StrategySession:
    """The session, its executor's greeting awaited at the first step (it starts meanwhile)."""
    return StrategySession(mode, backend, None, starting=backend)


# --------------------------------------------------------------------------- zygote backend


class _ZygoteBackend:
    """A session's executor under a supervisor of the zygote: candles and answers on the
    data socket, the final report (logs, CPU, how it ended) on the execution socket."""

    def __init__(
        self,
        zygote: Zygote,
        exec_sock: socket.socket,
        data_sock: socket.socket,
        options: dict[str, Any],
    ) -> None:
        self._zygote = zygote
        self._exec = exec_sock
        self._data = data_sock
        self._channel = _DataChannel(data_sock)
        self._timeout_s = float(options["timeout_s"])
        self._budget_s = float(options["budget_s"])
        self._outcome: RawOutcome | None = None
        self._deadline = 0.0  # the current step's: its timeout runs from the send

    def wait_ready(self) -> StepResult | None:
        """None once the executor is ready for the first step, else why it is not."""
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            ready = self._channel.read(deadline, len(child.SESSION_READY))
        except TimeoutError:
            self._kill()
            return StepResult(False, None, "sandbox did not start in time", True)
        except (OSError, EOFError):
            return self._ended()
        except ValueError:
            ready = b""
        if ready != child.SESSION_READY:
            self._kill()
            return StepResult(False, None, "sandbox setup failed: unexpected greeting", True)
        return None

    def send(self, packed: bytes) -> StepResult | None:
        self._deadline = time.monotonic() + self._timeout_s
        try:
            self._channel.send(_FRAME_HEADER.pack(len(packed)) + packed, self._deadline)
        except TimeoutError:
            self._kill()
            return StepResult(False, None, f"timeout after {self._timeout_s} s")
        except (OSError, EOFError):
            return self._ended()
        return None

    def receive(self) -> StepResult:
        try:
            raw = self._channel.read(self._deadline, MAX_ANSWER_BYTES)
        except TimeoutError:
            self._kill()
            return StepResult(False, None, f"timeout after {self._timeout_s} s")
        except ValueError:
            self._kill()
            return StepResult(False, None, "invalid result: malformed result frame")
        except (OSError, EOFError):
            return self._ended()
        if raw == _HOLD_ANSWER:
            return _HOLD
        ok, value, error, _dropped = parse_result(raw)
        return StepResult(ok, value, error)

    def answered(self) -> bool:
        return self._channel.readable()

    def close(self, abort: bool) -> tuple[str, float]:
        if self._outcome is None:
            self._kill() if abort else self._finish()
        outcome = self._outcome or RawOutcome()
        for sock in (self._data, self._exec):
            sock.close()
        return _logs(outcome), outcome.child_cpu_s * 1000.0

    def _finish(self) -> None:
        """End of the candles: the executor sends its final frame and exits."""
        with contextlib.suppress(OSError):
            self._data.shutdown(socket.SHUT_WR)
        self._outcome = self._report(FINISH_GRACE_S)
        if self._outcome is None:  # still busy (it answered, then kept running): kill it
            self._kill()

    def _kill(self) -> None:
        """Abort: the supervisor kills the executor as soon as this side shuts down."""
        with contextlib.suppress(OSError):
            self._exec.shutdown(socket.SHUT_WR)
        self._outcome = self._report(ABORT_GRACE_S) or RawOutcome(
            error="sandbox did not answer in time"
        )

    def _ended(self) -> StepResult:
        """The executor went away mid-step: what its supervisor saw says why."""
        self._outcome = self._report(ABORT_GRACE_S) or RawOutcome(
            error="sandbox did not answer in time"
        )
        return _ending(self._outcome, self._budget_s)

    def _report(self, wait_s: float) -> RawOutcome | None:
        """The supervisor's report, or None when it has not begun within ``wait_s``. A late
        one is never blamed on the zygote (a strategy must not be able to get it restarted)."""
        readable, _, _ = select.select([self._exec], [], [], wait_s)
        if not readable:
            return None
        deadline = time.monotonic() + PARENT_GRACE_S
        try:
            return self._zygote.read_report(self._exec, deadline, MAX_RESULT_BYTES)
        except ZygoteError as exc:
            return RawOutcome(error=str(exc))


def _ending(outcome: RawOutcome, budget_s: float) -> StepResult:
    """Why an executor stopped answering, from its supervisor's report."""
    if outcome.error:
        return StepResult(False, None, outcome.error, True)
    if outcome.timed_out:  # the supervisor's deadline: the session's budget
        return StepResult(False, None, f"session budget of {budget_s} s exceeded")
    if outcome.result:
        ok, _value, error, _dropped = parse_result(outcome.result)
        if not ok:
            return StepResult(False, None, error, error.startswith(SETUP_FAILED))
    # Exited or killed without a word (a final frame saying "ok" answers no step either).
    return StepResult(False, None, describe_exit(outcome.returncode))


def _logs(outcome: RawOutcome) -> str:
    dropped = 0
    if outcome.result:
        dropped = parse_result(outcome.result)[3]
    return format_logs(outcome, dropped)


class _DataChannel:
    """The data socket, non-blocking, with one poll object: a step costs a send, a poll
    and (usually) one recv, no timeout bookkeeping syscalls."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._buffer = bytearray()
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self._poll_out = select.poll()
        self._poll_out.register(sock, select.POLLOUT)

    def send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self._sock.send(view) :]
            except BlockingIOError:
                self._wait(self._poll_out, deadline)

    def read(self, deadline: float, limit: int) -> bytes:
        """One frame; TimeoutError past ``deadline``, EOFError at the end of the stream,
        ValueError for a frame over ``limit`` bytes."""
        while True:
            frame = self._take(limit)
            if frame is not None:
                return frame
            self._wait(self._poll, deadline)
            try:
                chunk = self._sock.recv(1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                raise EOFError("the session's executor closed the connection")
            self._buffer += chunk

    def readable(self) -> bool:
        """A whole frame is buffered, or the socket has data or its end to read."""
        return self._take_ready() or bool(self._poll.poll(0))

    def _take_ready(self) -> bool:
        size = self._frame_size()
        return size is not None and len(self._buffer) >= _FRAME_HEADER.size + size

    def _frame_size(self) -> int | None:
        """The buffered frame's size, once its header is in."""
        if len(self._buffer) < _FRAME_HEADER.size:
            return None
        return int(_FRAME_HEADER.unpack_from(self._buffer)[0])

    def _wait(self, poller: select.poll, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(math.ceil(remaining * 1000)):
            raise TimeoutError

    def _take(self, limit: int) -> bytes | None:
        size = self._frame_size()
        if size is None:
            return None
        if size > limit:
            raise ValueError(f"frame of {size} bytes")
        end = _FRAME_HEADER.size + size
        if len(self._buffer) < end:
            return None
        frame = bytes(self._buffer[_FRAME_HEADER.size : end])
        del self._buffer[:end]
        return frame


# --------------------------------------------------------------------------- cold backend


class _ColdRequest:
    """What a cold session needs to build one request per step."""

    def __init__(
        self,
        code: str,
        settings: dict[str, Any],
        lookback: int | None,
        history: bytes,
        options: dict[str, Any],
    ) -> None:
        self.code = code
        self.settings = settings
        self.lookback = lookback
        self.history = history
        self.options = options


class _ColdBackend:
    """No zygote: each step is a single-use cold execution on the newest MAX_LOOKBACK rows
    (what run_strategy sends), the session's rows kept here."""

    def __init__(self, request: _ColdRequest, require_isolation: bool) -> None:
        self._request = request
        self._require = require_isolation
        self._rows = child.RowBuffer(request.history)
        self._deadline = time.monotonic() + float(request.options["budget_s"])
        self._logs: list[str] = []
        self._log_chars = 0
        self._cpu_ms = 0.0

    def send(self, packed: bytes) -> StepResult | None:
        if time.monotonic() > self._deadline:
            budget_s = float(self._request.options["budget_s"])
            return StepResult(False, None, f"session budget of {budget_s} s exceeded")
        self._rows.append(packed)
        return None

    def receive(self) -> StepResult:
        started = time.monotonic()
        timeout_s = float(self._request.options["timeout_s"])
        payload = self._payload(self._rows.newest(child.MAX_LOOKBACK).tobytes())
        outcome, mode = execute(payload, timeout_s, "cold", self._require)
        result = interpret(outcome, timeout_s, started, mode)
        self._keep_logs(result.logs)
        self._cpu_ms += result.cpu_ms
        return StepResult(result.ok, result.value, result.error, result.sandbox_failure)

    def answered(self) -> bool:
        return True  # the step runs in receive(): there is nothing to wait for before it

    def close(self, abort: bool) -> tuple[str, float]:
        logs = "".join(self._logs)
        if self._log_chars > MAX_LOG_BYTES:
            logs += f"\n[... {self._log_chars - MAX_LOG_BYTES} bytes dropped]"
        return logs, self._cpu_ms

    def _payload(self, window: bytes) -> bytes:
        request = self._request
        return build_request(
            code=request.code,
            candles=None,
            packed=window,
            settings=request.settings,
            timeout_s=float(request.options["timeout_s"]),
            memory_mb=int(request.options["memory_mb"]),
            lookback=request.lookback,
            read_paths=cold_read_paths("cold"),
        )

    def _keep_logs(self, text: str) -> None:
        room = MAX_LOG_BYTES - self._log_chars
        if room > 0 and text:
            self._logs.append(text[:room])
        self._log_chars += len(text)
