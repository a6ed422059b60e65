"""Child side of the strategy sandbox: runs ONE strategy and reports ONE result.

This file is executed as a script (``python -I -S -B child.py RESULT_FD``) or imported by the
zygote (``zygote.py``), so it must stay self-contained: stdlib only at import time, no Django,
nothing from the project. pandas/numpy are imported lazily because ``sys.path`` is only set up
from the request (the interpreter runs with ``-I -S`` so it cannot see the project or
site-packages on its own).

Wire format, parent -> child on stdin::

    8-byte big-endian header length | header JSON | candles (float64, row-major, N x 6)

Child -> parent:
    * fd 1/2: the strategy's output (print, logging, C-level writes), capped here and in the
      parent;
    * RESULT_FD: a single JSON document ``{"ok": .., "value": .., "error": .., "dropped": ..}``
      written once at the end. It is a dedicated pipe, so nothing the strategy prints can be
      mistaken for the result.

Session mode (``run_session``, started by the zygote for ``strategy_session``): the request's
candles are the warm-up history, and fd 0 is a socket to the parent instead of /dev/null.
Both directions carry frames of a 4-byte big-endian length and a body:

    parent -> child: closed candles to append (float64, row-major, n x 6); EOF ends the session
    child -> parent: first ``{"ready": true}``, then one answer per candle frame,
                     ``{"ok": true, "value": ..}`` or ``{"ok": false, "error": ..}`` (the last)

The parent sends the next candles only once it has the answer for the previous ones, so this
process never holds a candle before its step. The final frame still goes to RESULT_FD.
"""

from __future__ import annotations

import builtins
import io
import json
import linecache
import math
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback
import types
from typing import Any

STRATEGY_FILENAME = "<strategy>"
MAX_LOG_BYTES = 1024 * 1024
MAX_RESULT_BYTES = 1024 * 1024
MAX_ERROR_CHARS = 8192
DEFAULT_LOOKBACK = 100
MAX_LOOKBACK = 5000
# The most candle rows one child holds: a session's history and stepped candles (the oldest
# are dropped beyond it), and the frame handed to generate_signals.
MAX_ROWS = 200_000
# Result budget per candle of generate_signals (its result has one entry per row).
RESULT_BYTES_PER_ROW = 1024
CANDLE_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
ROW_BYTES = 8 * len(CANDLE_COLUMNS)
SESSION_READY = b'{"ready": true}'
# A session's executor polls this long for the next candles before it sleeps: a caller that
# answers quickly then finds it awake (a sleeping process on an idle CPU takes tens of
# microseconds to wake, more in a virtual machine). Given up while it does not pay off.
SESSION_POLL_S = 0.0005
SESSION_POLL_RETRY = 16  # steps without polling before it is tried again
_FRAME_HEADER = struct.Struct(">I")
# Written on the result pipe once the child is ready to run the strategy code, so the parent
# can start the strategy's timeout then (start-up time is not the strategy's fault).
READY_BYTE = b"R"
# Kept in reserve so that a strategy that exhausted RLIMIT_AS still leaves room to format
# and send the "memory limit exceeded" error.
_memory_reserve: bytearray | None = None


class StrategyError(Exception):
    """A failure already formatted for the user (goes to SandboxResult.error as-is)."""


class CappedWriter(io.TextIOBase):
    """sys.stdout/sys.stderr replacement: writes straight to a fd until ``cap`` bytes, then
    only counts what it drops. Writing through immediately keeps the logs even if the child is
    killed (timeout), and dropping here keeps ``print`` of 100 MB cheap (no pipe traffic)."""

    def __init__(self, fd: int, budget: list[int]) -> None:
        super().__init__()
        self._fd = fd
        self._budget = budget  # [bytes left, bytes dropped], shared by stdout and stderr

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        left = max(self._budget[0], 0)
        # Encode only what can be kept (a char is at least one byte): printing 100 MB must not
        # cost another 100 MB, which the memory limit would turn into a failure.
        head = text[:left].encode("utf-8", "backslashreplace")
        keep = head[:left]
        self._budget[0] = left - len(keep)
        self._budget[1] += len(head) - len(keep) + _utf8_size(text, left)
        _write_all(self._fd, keep)
        return len(text)


def _utf8_size(text: str, start: int) -> int:
    """Encoded size of ``text[start:]``, without encoding it all at once."""
    if text.isascii():
        return max(len(text) - start, 0)
    step = 1 << 20
    return sum(
        len(text[i : i + step].encode("utf-8", "backslashreplace"))
        for i in range(start, len(text), step)
    )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:
            return  # the parent went away or closed the pipe: nothing useful left to do
        view = view[written:]


def read_exact(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError(f"expected {remaining} more bytes")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_request(fd: int) -> tuple[dict[str, Any], bytes]:
    (header_len,) = struct.unpack(">Q", read_exact(fd, 8))
    header = json.loads(read_exact(fd, header_len))
    candles = read_exact(fd, int(header["candles_bytes"]))
    return header, candles


def encode_request(header: dict[str, Any], candles: bytes) -> bytes:
    header = {**header, "candles_bytes": len(candles)}
    raw = json.dumps(header, allow_nan=False).encode()
    return struct.pack(">Q", len(raw)) + raw + candles


# --------------------------------------------------------------------------- limits


def apply_limits(timeout_s: float, memory_mb: int, baseline_bytes: int = 0) -> None:
    """Lower this process's own limits. Runs before any strategy code, so the strategy cannot
    undo them (hard limits can only go down without CAP_SYS_RESOURCE, dropped right after).
    ``baseline_bytes`` is the address space already mapped (preloaded libraries): the strategy
    gets ``memory_mb`` on top of it."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_limit = math.ceil(used.ru_utime + used.ru_stime + timeout_s + 1)
    _setrlimit(resource.RLIMIT_CPU, cpu_limit, cpu_limit + 1)
    _setrlimit(resource.RLIMIT_AS, baseline_bytes + memory_mb * 1024 * 1024)
    _setrlimit(resource.RLIMIT_NOFILE, 64)
    _setrlimit(resource.RLIMIT_FSIZE, 1024 * 1024)
    _setrlimit(resource.RLIMIT_CORE, 0)
    # Counts every process of the uid (and is ignored for root): PID namespaces and seccomp
    # in the isolated mode are what really stop fork bombs; this is defence in depth.
    _setrlimit(resource.RLIMIT_NPROC, 64)
    # Exceeding RLIMIT_FSIZE should raise OSError(EFBIG) in the strategy, not kill us silently.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def address_space_bytes() -> int:
    """Current virtual size: RLIMIT_AS is set to this + memory_mb, so that the limit measures
    what the strategy allocates, not the preloaded libraries (numpy/OpenBLAS reserve a lot of
    address space they never use)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _setrlimit(which: int, soft: int, hard: int | None = None) -> None:
    hard = soft if hard is None else hard
    _, cur_hard = resource.getrlimit(which)
    if cur_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, cur_hard), min(hard, cur_hard)
    try:
        resource.setrlimit(which, (soft, hard))
    except (ValueError, OSError):
        resource.setrlimit(which, (soft, soft))


# --------------------------------------------------------------------------- execution


def import_libraries() -> None:
    """Import what strategies may use; the zygote calls this once so forks start warm."""
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import ta  # noqa: F401


# Run once by the zygote on made-up candles: what every execution goes through (the frame,
# rolling windows, the result's strict JSON) that pandas and numpy only set up on first use.
_WARM_UP_CODE = """
def generate_signal(candles, settings):
    close = candles["close"]
    fast, slow = close.rolling(10).mean(), close.rolling(50).mean()
    mid = (candles["high"] + candles["low"]) / 2
    return {"signal": "HOLD", "price": float(close.iloc[-1]),
            "metadata": {"up": bool(fast.iloc[-1] > slow.iloc[-1]), "mid": mid.iloc[-1]}}
"""


def warm_up(*, in_zygote: bool) -> None:
    """Do once in the zygote what each fork would otherwise do again: pandas' lazy imports and
    caches of a first DataFrame, rolling window and timestamp conversion. Made-up data only
    (the zygote never sees an execution's), and nothing of it is left behind but those caches.

    A spare executor runs it once more after its fork, before it is given an execution: the
    pages an execution writes to (reference counts, allocator state) are then copied from the
    zygote already, off the execution's time."""
    import gc

    import numpy as np

    rows = np.empty((200, len(CANDLE_COLUMNS)), dtype="<f8")
    rows[:, 0] = 1_600_000_000_000 + 300_000 * np.arange(200)
    rows[:, 1:] = 100.0 + np.sin(np.arange(200) / 15.0)[:, None]
    header = {"code": _WARM_UP_CODE, "settings": {}, "lookback": 200}
    encode_value(run_strategy_code(header, rows.tobytes()))
    sys.modules.pop("strategy", None)
    linecache.cache.pop(STRATEGY_FILENAME, None)
    if in_zygote:
        # Not in a fork: a collection there writes to every page holding a tracked object.
        gc.collect()


def candle_rows(candles: Any) -> Any:
    """Packed candles (bytes) or an array of rows -> a read-only (n x 6) float64 view."""
    import numpy as np

    if isinstance(candles, np.ndarray):
        return candles
    return np.frombuffer(candles, dtype="<f8").reshape(-1, len(CANDLE_COLUMNS))


def build_frame(candles: Any, lookback: int) -> Any:
    """The DataFrame a strategy gets: the newest ``lookback`` rows of ``candles`` (packed bytes
    or an (n x 6) array), every column a fresh copy (the strategy may mutate it freely)."""
    import pandas as pd

    rows = candle_rows(candles)[-lookback:]
    data: dict[str, Any] = {
        "timestamp": pd.to_datetime(rows[:, 0].astype("int64"), unit="ms", utc=True),
    }
    for index, name in enumerate(CANDLE_COLUMNS[1:], start=1):
        data[name] = rows[:, index].copy()  # writable float64 columns
    return pd.DataFrame(data)


def compile_strategy(code: str) -> types.CodeType:
    try:
        compiled = compile(code, STRATEGY_FILENAME, "exec")
    except SyntaxError as exc:
        raise StrategyError(f"syntax error: {exc.msg} (line {exc.lineno})") from None
    # Lets tracebacks show the strategy's source lines.
    linecache.cache[STRATEGY_FILENAME] = (len(code), None, code.splitlines(True), STRATEGY_FILENAME)
    return compiled


def new_module(compiled: types.CodeType) -> types.ModuleType:
    module = types.ModuleType("strategy")
    module.__dict__["__builtins__"] = builtins
    sys.modules["strategy"] = module  # dataclasses & co. look their module up here
    exec(compiled, module.__dict__)
    return module


def load_module(code: str) -> types.ModuleType:
    return new_module(compile_strategy(code))


def strategy_function(module: types.ModuleType, name: str) -> Any:
    func = module.__dict__.get(name)
    if not callable(func):
        raise StrategyError(f"invalid strategy: {name}(candles, settings) is not defined")
    return func


def resolve_lookback(module: types.ModuleType, requested: int | None) -> int:
    value = requested if requested is not None else getattr(module, "LOOKBACK", DEFAULT_LOOKBACK)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LOOKBACK:
        raise StrategyError(f"invalid strategy: LOOKBACK must be an int in 1..{MAX_LOOKBACK}")
    return value


def run_strategy_code(header: dict[str, Any], candles: Any) -> Any:
    module = load_module(header["code"])
    func = strategy_function(module, "generate_signal")
    frame = build_frame(candles, resolve_lookback(module, header.get("lookback")))
    return func(frame, header["settings"])


def run_signals_code(header: dict[str, Any], candles: bytes) -> dict[str, Any]:
    """``generate_signals(all candles, settings)`` -> ``{"signals": [dict | None, ...]}``."""
    module = load_module(header["code"])
    func = strategy_function(module, "generate_signals")
    rows = len(candles) // ROW_BYTES
    # Every row: the caller cut nothing but MAX_ROWS, and [-0:] is all of an empty frame.
    return encode_signals(func(build_frame(candles, rows), header["settings"]), rows)


def run_entry(header: dict[str, Any], candles: bytes) -> Any:
    """The request's entry point, its result already checked and JSON-ready."""
    if header.get("entry") == "signals":
        return run_signals_code(header, candles)
    return encode_value(run_strategy_code(header, candles))


def _json_default(obj: Any) -> Any:
    # Strategies naturally return numpy scalars / timestamps in metadata; convert the obvious
    # ones instead of rejecting them. Anything else is an error.
    item = getattr(obj, "item", None)
    if callable(item) and type(obj).__module__ == "numpy":
        return item()
    isoformat = getattr(obj, "isoformat", None)
    if callable(isoformat):
        return isoformat()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def strict_json(value: Any) -> str:
    """``value`` as strict JSON (finite numbers only), or a StrategyError saying why not."""
    try:
        return json.dumps(value, allow_nan=False, default=_json_default)
    except ValueError:
        raise StrategyError("invalid result: non-finite number") from None
    except (TypeError, RecursionError) as exc:
        raise StrategyError(f"invalid result: {exc}") from None


def value_json(value: Any) -> str:
    """What generate_signal returned, checked, as the JSON the parent will parse."""
    if value is not None and not isinstance(value, dict):
        raise StrategyError(f"invalid result: expected a dict or None, got {type(value).__name__}")
    raw = strict_json(value)
    if len(raw) > MAX_RESULT_BYTES:
        raise StrategyError(f"invalid result: larger than {MAX_RESULT_BYTES} bytes")
    return raw


def encode_value(value: Any) -> Any:
    """Round-trip through strict JSON so the parent gets exactly what it will parse."""
    return json.loads(value_json(value))


# --------------------------------------------------------------------------- generate_signals

SIGNAL_COLUMNS = ("signal", "price", "stopLoss", "takeProfit")


def signals_result_limit(rows: int) -> int:
    """Result budget of generate_signals over ``rows`` candles: it grows with the rows."""
    return max(MAX_RESULT_BYTES, rows * RESULT_BYTES_PER_ROW)


def encode_signals(value: Any, rows: int) -> dict[str, Any]:
    """What generate_signals returned -> ``{"signals": [dict | None, ...]}``, one per candle,
    checked like encode_value (the failing row named)."""
    signals = _signal_rows(value)
    if len(signals) != rows:
        raise StrategyError(f"generate_signals returned {len(signals)} rows for {rows} candles")
    try:
        raw = strict_json(signals)
    except StrategyError:
        _raise_for_first_bad_row(signals)
        raise
    limit = signals_result_limit(rows)
    if len(raw) > limit:
        raise StrategyError(f"invalid result: larger than {limit} bytes")
    return {"signals": json.loads(raw)}


def _raise_for_first_bad_row(signals: list[Any]) -> None:
    for index, entry in enumerate(signals):
        try:
            strict_json(entry)
        except StrategyError as exc:
            raise StrategyError(f"{exc} (row {index})") from None


def _signal_rows(value: Any) -> list[Any]:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return _frame_signals(value)
    if isinstance(value, pd.Series):
        return [_signal_row({"signal": item}, i) for i, item in enumerate(value.tolist())]
    if isinstance(value, list | tuple):
        for index, entry in enumerate(value):
            if entry is not None and not isinstance(entry, dict):
                kind = type(entry).__name__
                raise StrategyError(f"invalid result: row {index} is a {kind}, not a dict or None")
        return list(value)
    raise StrategyError(
        "invalid result: generate_signals must return a list, a pandas Series or a DataFrame, "
        f"got {type(value).__name__}"
    )


def _frame_signals(frame: Any) -> list[Any]:
    columns = [str(name) for name in frame.columns]
    unexpected = sorted(set(columns) - set(SIGNAL_COLUMNS))
    if "signal" not in columns or unexpected or len(set(columns)) != len(columns):
        raise StrategyError(
            f"invalid result: generate_signals returned the columns {columns}; expected "
            f"'signal' and optionally {', '.join(repr(c) for c in SIGNAL_COLUMNS[1:])}"
        )
    values = zip(*(frame.iloc[:, i].tolist() for i in range(len(columns))), strict=True)
    return [_signal_row(dict(zip(columns, row, strict=True)), i) for i, row in enumerate(values)]


def _signal_row(fields: dict[str, Any], index: int) -> dict[str, Any] | None:
    """One row of a Series/DataFrame result: missing values left out, HOLD (or no signal)
    is None."""
    present = {name: item for name, item in fields.items() if not _is_missing(item)}
    signal = present.get("signal")
    if signal is None:
        return None
    if not isinstance(signal, str):
        kind = type(signal).__name__
        raise StrategyError(f"invalid result: row {index}: signal must be a string, got {kind}")
    return None if signal.upper() == "HOLD" else present


def _is_missing(item: Any) -> bool:
    """None, NaN, NaT or pd.NA."""
    import numpy as np
    import pandas as pd

    if item is None:
        return True
    if isinstance(item, str | dict | list | tuple):
        return False
    try:
        missing = pd.isna(item)
    except (TypeError, ValueError):
        return False
    return isinstance(missing, bool | np.bool_) and bool(missing)


# --------------------------------------------------------------------------- failures


def format_exception(exc: BaseException, memory_mb: int) -> str:
    if isinstance(exc, StrategyError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return f"memory limit exceeded ({memory_mb} MiB)"
    if isinstance(exc, SystemExit):
        return f"strategy called sys.exit({exc.code!r})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == STRATEGY_FILENAME]
    where = f" (line {frames[-1].lineno})" if frames else ""
    message = f"exception: {type(exc).__name__}: {exc}{where}"
    if frames:
        message += "\nTraceback (most recent call last):\n" + "".join(traceback.format_list(frames))
    return message[:MAX_ERROR_CHARS]


def _failure(exc: BaseException, memory_mb: int) -> dict[str, Any]:
    """The frame of a failed execution (frees the memory reserve first: the strategy may have
    exhausted its address space)."""
    global _memory_reserve
    _memory_reserve = None
    error = format_exception(exc, memory_mb)
    traceback.clear_frames(exc.__traceback__)
    return {"ok": False, "value": None, "error": error}


def hold_memory_reserve() -> None:
    """Set the reserve aside (a spare executor does it before its request arrives: writing
    4 MiB of fresh pages is a thousand page faults)."""
    global _memory_reserve
    if _memory_reserve is None:
        _memory_reserve = bytearray(4 * 1024 * 1024)


def _capture_output(log_fd: int) -> list[int]:
    """stdout/stderr to ``log_fd``, capped; -> the budget [bytes left, bytes dropped]."""
    budget = [MAX_LOG_BYTES, 0]
    sys.stdout = sys.stderr = CappedWriter(log_fd, budget)
    hold_memory_reserve()
    return budget


def execute(header: dict[str, Any], candles: bytes, log_fd: int) -> dict[str, Any]:
    """Run the strategy with stdout/stderr captured; never raises."""
    budget = _capture_output(log_fd)
    try:
        frame: dict[str, Any] = {"ok": True, "value": run_entry(header, candles), "error": ""}
    except BaseException as exc:
        frame = _failure(exc, int(header["memory_mb"]))
    frame["dropped"] = budget[1]
    return frame


# --------------------------------------------------------------------------- session


def time_limit_s(header: dict[str, Any]) -> float:
    """How long the executor may run (wall clock and CPU): a session's budget, else the
    timeout of its one call."""
    return float(header.get("budget_s") or header["timeout_s"])


class FrameReader:
    """Length-prefixed frames from ``fd``, usually one read each (the parent writes a frame
    at once). In lockstep nothing follows a frame but the parent's next one, so reading
    ahead cannot bring in a later candle. ``poll_s``: see SESSION_POLL_S."""

    def __init__(self, fd: int, poll_s: float = 0.0) -> None:
        self._fd = fd
        self._buffer = b""
        self._poll_s = poll_s
        self._polling = poll_s > 0
        self._idle = 0  # reads since polling was given up

    def read(self) -> bytes | None:
        """The next frame, None at the end of the stream."""
        while True:
            if len(self._buffer) >= _FRAME_HEADER.size:
                (size,) = _FRAME_HEADER.unpack_from(self._buffer)
                end = _FRAME_HEADER.size + size
                if len(self._buffer) >= end:
                    frame, self._buffer = self._buffer[_FRAME_HEADER.size : end], self._buffer[end:]
                    return frame
            self._wait()
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk

    def _wait(self) -> None:
        """Poll for data a moment (while that keeps catching it), then the read may block."""
        if not self._polling:
            self._idle += 1
            self._polling = self._poll_s > 0 and self._idle >= SESSION_POLL_RETRY
            return
        self._idle = 0
        end = time.perf_counter() + self._poll_s
        while time.perf_counter() < end:
            if select.select([self._fd], [], [], 0)[0]:
                return
        self._polling = False


def write_frame(fd: int, body: bytes) -> None:
    _write_all(fd, _FRAME_HEADER.pack(len(body)) + body)


class RowBuffer:
    """A session's candles, oldest first: at most MAX_ROWS rows, the oldest dropped beyond
    (only the newest LOOKBACK rows are ever shown). Grows by doubling."""

    def __init__(self, history: bytes) -> None:
        import numpy as np

        rows = candle_rows(history)[-MAX_ROWS:]
        capacity = min(MAX_ROWS, max(2 * len(rows), 1024))
        self._rows = np.empty((capacity, len(CANDLE_COLUMNS)), dtype="<f8")
        self._rows[: len(rows)] = rows
        self._used = len(rows)

    def append(self, packed: bytes) -> None:
        new = candle_rows(packed)[-MAX_LOOKBACK:]  # no window reaches further back
        if self._used + len(new) > len(self._rows):
            self._make_room(len(new))
        self._rows[self._used : self._used + len(new)] = new
        self._used += len(new)

    def newest(self, count: int) -> Any:
        return self._rows[max(self._used - count, 0) : self._used]

    def _make_room(self, needed: int) -> None:
        import numpy as np

        if len(self._rows) < MAX_ROWS:
            size = min(MAX_ROWS, max(2 * len(self._rows), self._used + needed))
            grown = np.empty((size, len(CANDLE_COLUMNS)), dtype="<f8")
            grown[: self._used] = self._rows[: self._used]
            self._rows = grown
        if self._used + needed > len(self._rows):
            keep = min(self._used, MAX_ROWS // 2)
            self._rows[:keep] = self._rows[self._used - keep : self._used].copy()
            self._used = keep


class Session:
    """One strategy fed one close at a time. Each step runs the module afresh on the newest
    LOOKBACK rows, exactly as a single execution would: no module state carries over."""

    def __init__(self, header: dict[str, Any], history: bytes) -> None:
        self._code = str(header["code"])
        self._compiled: types.CodeType | None = None
        self._lookback = header.get("lookback")
        self._settings = header["settings"]
        self.memory_mb = int(header["memory_mb"])
        self.poll_s = float(header.get("poll_s", SESSION_POLL_S))
        self.rows = RowBuffer(history)

    def step(self, packed: bytes) -> bytes:
        """Append ``packed`` candles, run generate_signal once -> its checked value as JSON."""
        self.rows.append(packed)
        if self._compiled is None:
            self._compiled = compile_strategy(self._code)
        module = new_module(self._compiled)
        func = strategy_function(module, "generate_signal")
        lookback = resolve_lookback(module, self._lookback)
        frame = build_frame(self.rows.newest(lookback), lookback)
        return value_json(func(frame, self._settings)).encode()


def run_session(
    header: dict[str, Any], history: bytes, data_fd: int, log_fd: int
) -> dict[str, Any]:
    """Answer candle frames on ``data_fd`` until it ends or a step fails -> the final frame.
    Never raises."""
    budget = _capture_output(log_fd)
    session = Session(header, history)
    write_frame(data_fd, SESSION_READY)
    frame = _session_loop(session, data_fd)
    frame["dropped"] = budget[1]
    return frame


def _session_loop(session: Session, data_fd: int) -> dict[str, Any]:
    frames = FrameReader(data_fd, session.poll_s)
    while (packed := frames.read()) is not None:
        try:
            answer = b'{"ok": true, "value": ' + session.step(packed) + b"}"
        except BaseException as exc:
            failed = _failure(exc, session.memory_mb)
            write_frame(data_fd, json.dumps(failed).encode())
            return failed
        write_frame(data_fd, answer)
    return {"ok": True, "value": None, "error": ""}


def send_result(fd: int, frame: dict[str, Any]) -> None:
    try:
        raw = json.dumps(frame, allow_nan=False).encode()
    except ValueError:  # cannot happen after encode_value, but never send NaN
        raw = json.dumps({"ok": False, "value": None, "error": "invalid result"}).encode()
    _write_all(fd, raw)
    os.close(fd)


def main(argv: list[str]) -> None:
    """Cold mode: one execution in this fresh process (see process.py)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import jail  # this directory only, before sys.path is replaced

    # Die with the worker (a sleeping strategy would otherwise outlive a killed worker).
    parent = os.getppid()
    jail.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    result_fd = int(argv[1])
    header, candles = read_request(0)
    sys.path[:] = header["sys_path"]
    import_libraries()
    os.close(0)
    apply_limits(float(header["timeout_s"]), int(header["memory_mb"]), address_space_bytes())
    jail.confine(workdir=os.getcwd(), read_paths=header.get("read_paths") or [])
    _write_all(result_fd, READY_BYTE)
    frame = execute(header, candles, log_fd=1)
    send_result(result_fd, frame)
    # Skip interpreter teardown (atexit handlers registered by the strategy, slow GC).
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
