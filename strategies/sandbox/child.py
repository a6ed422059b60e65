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
"""

from __future__ import annotations

import builtins
import io
import json
import linecache
import math
import os
import resource
import signal
import struct
import sys
import traceback
import types
from typing import Any

STRATEGY_FILENAME = "<strategy>"
MAX_LOG_BYTES = 1024 * 1024
MAX_RESULT_BYTES = 1024 * 1024
MAX_ERROR_CHARS = 8192
DEFAULT_LOOKBACK = 100
MAX_LOOKBACK = 5000
CANDLE_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
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


def build_frame(candles: bytes, lookback: int) -> Any:
    import numpy as np
    import pandas as pd

    rows = np.frombuffer(candles, dtype="<f8").reshape(-1, len(CANDLE_COLUMNS))[-lookback:]
    data: dict[str, Any] = {
        "timestamp": pd.to_datetime(rows[:, 0].astype("int64"), unit="ms", utc=True),
    }
    for index, name in enumerate(CANDLE_COLUMNS[1:], start=1):
        data[name] = rows[:, index].copy()  # writable float64 columns
    return pd.DataFrame(data)


def load_module(code: str) -> types.ModuleType:
    try:
        compiled = compile(code, STRATEGY_FILENAME, "exec")
    except SyntaxError as exc:
        raise StrategyError(f"syntax error: {exc.msg} (line {exc.lineno})") from None
    # Lets tracebacks show the strategy's source lines.
    linecache.cache[STRATEGY_FILENAME] = (len(code), None, code.splitlines(True), STRATEGY_FILENAME)
    module = types.ModuleType("strategy")
    module.__dict__["__builtins__"] = builtins
    sys.modules["strategy"] = module  # dataclasses & co. look their module up here
    exec(compiled, module.__dict__)
    return module


def resolve_lookback(module: types.ModuleType, requested: int | None) -> int:
    value = requested if requested is not None else getattr(module, "LOOKBACK", DEFAULT_LOOKBACK)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LOOKBACK:
        raise StrategyError(f"invalid strategy: LOOKBACK must be an int in 1..{MAX_LOOKBACK}")
    return value


def run_strategy_code(header: dict[str, Any], candles: bytes) -> Any:
    module = load_module(header["code"])
    func = module.__dict__.get("generate_signal")
    if not callable(func):
        raise StrategyError("invalid strategy: generate_signal(candles, settings) is not defined")
    frame = build_frame(candles, resolve_lookback(module, header.get("lookback")))
    return func(frame, header["settings"])


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


def encode_value(value: Any) -> Any:
    """Round-trip through strict JSON so the parent gets exactly what it will parse."""
    if value is not None and not isinstance(value, dict):
        raise StrategyError(f"invalid result: expected a dict or None, got {type(value).__name__}")
    try:
        raw = json.dumps(value, allow_nan=False, default=_json_default)
    except ValueError:
        raise StrategyError("invalid result: non-finite number") from None
    except (TypeError, RecursionError) as exc:
        raise StrategyError(f"invalid result: {exc}") from None
    if len(raw) > MAX_RESULT_BYTES:
        raise StrategyError(f"invalid result: larger than {MAX_RESULT_BYTES} bytes")
    return json.loads(raw)


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


def execute(header: dict[str, Any], candles: bytes, log_fd: int) -> dict[str, Any]:
    """Run the strategy with stdout/stderr captured; never raises."""
    global _memory_reserve
    budget = [MAX_LOG_BYTES, 0]
    sys.stdout = sys.stderr = CappedWriter(log_fd, budget)
    _memory_reserve = bytearray(4 * 1024 * 1024)
    try:
        value = encode_value(run_strategy_code(header, candles))
        frame: dict[str, Any] = {"ok": True, "value": value, "error": ""}
    except BaseException as exc:
        _memory_reserve = None
        error = format_exception(exc, int(header["memory_mb"]))
        traceback.clear_frames(exc.__traceback__)
        frame = {"ok": False, "value": None, "error": error}
    frame["dropped"] = budget[1]
    return frame


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
