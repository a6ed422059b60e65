"""Parent-side helpers shared by the sandbox backends: request encoding, child environment,
strict decoding of the child's result. No Django here."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import signal
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import child

SANDBOX_DIR = Path(__file__).resolve().parent
CHILD_SCRIPT = SANDBOX_DIR / "child.py"
MAX_LOG_BYTES = child.MAX_LOG_BYTES
MAX_RESULT_BYTES = child.MAX_RESULT_BYTES
MAX_ERROR_CHARS = child.MAX_ERROR_CHARS
# Nesting allowed in a result frame ({"value": {"metadata": {...}}} is 3): deeper structures
# are refused rather than handed to the database (and json/jsonb parsers) to recurse through.
MAX_RESULT_DEPTH = 64
# What PostgreSQL cannot store: NUL (in text and in jsonb) and lone surrogates (not UTF-8;
# SQLite refuses them too). Everything from the child is decoded by strategy-controlled JSON
# and bytes, so any string may hold them, dict keys included.
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")
READY_BYTE = child.READY_BYTE


class RequestError(ValueError):
    """The caller's arguments cannot be sent to the child."""


@dataclass
class RawOutcome:
    """What a backend observed about one execution, before interpretation."""

    result: bytes = b""
    logs: bytearray = field(default_factory=bytearray)
    dropped: int = 0
    returncode: int | None = None  # >= 0 exit code, < 0 signal number, None unknown
    timed_out: bool = False
    error: str = ""  # backend failure (could not start, sandbox died, ...)
    child_cpu_s: float = 0.0  # CPU of the sandboxed processes, when the backend knows it

    def add_logs(self, data: bytes) -> None:
        room = MAX_LOG_BYTES - len(self.logs)
        if room > 0:
            self.logs += data[:room]
        self.dropped += max(0, len(data) - max(room, 0))


@functools.cache
def child_sys_path() -> list[str]:
    """The interpreter's stdlib + site-packages, and nothing from the project or cwd: the child
    runs with -I -S so it gets exactly this list."""
    paths = sysconfig.get_paths()
    wanted = {
        os.path.realpath(p)
        # Not "platstdlib": in a virtualenv it is the venv's lib dir, not a module directory.
        for key in ("stdlib", "purelib", "platlib")
        if (p := paths.get(key))
    }
    result = []
    for entry in sys.path:
        if not entry:
            continue
        real = os.path.realpath(entry)
        if real in wanted or real.endswith(".zip") or real.endswith("lib-dynload"):
            result.append(entry)
    for p in sorted(wanted):
        if p not in {os.path.realpath(e) for e in result}:
            result.append(p)
    return result


WORKDIR_PREFIX = "strategy-run-"
_WORKDIR_RE = re.compile(rf"^{WORKDIR_PREFIX}(\d+)-")


def workdir_prefix(owner_pid: int) -> str:
    """Per-execution work directories are named after the process whose death abandons them
    (rlimit supervisor, or the worker for cold runs), so a later sweep can tell."""
    return f"{WORKDIR_PREFIX}{owner_pid}-"


def sweep_stale_workdirs(directory: str) -> int:
    """Remove work directories whose owner process is gone: left by a worker or zygote killed
    with SIGKILL in the middle of an execution (nothing could clean up then)."""
    removed = 0
    try:
        entries = os.listdir(directory)
    except OSError:
        return 0
    for name in entries:
        match = _WORKDIR_RE.match(name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
            removed += 1
    return removed


def child_env(workdir: str) -> dict[str, str]:
    """A minimal environment: no secrets, no Django settings, single-threaded BLAS."""
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_MAX_THREADS": "1",
    }


def candle_array(candles: Any) -> np.ndarray:
    """ccxt OHLCV rows -> a float64 (N x 6) array, or RequestError."""
    try:
        array = np.asarray(candles, dtype="<f8")
    except (TypeError, ValueError) as exc:
        raise RequestError(f"invalid candles: {exc}") from None
    if array.size == 0:
        return np.empty((0, len(child.CANDLE_COLUMNS)), dtype="<f8")
    if array.ndim != 2 or array.shape[1] != len(child.CANDLE_COLUMNS):
        raise RequestError("invalid candles: expected rows of [time_ms, o, h, l, c, v]")
    return array


def pack_candles(candles: Any, keep: int = child.MAX_LOOKBACK) -> bytes:
    """ccxt OHLCV rows -> packed little-endian float64 (N x 6). Only the newest ``keep`` rows
    are sent (by default MAX_LOOKBACK: no strategy may look further back)."""
    return np.ascontiguousarray(candle_array(candles)[-keep:]).tobytes()


def pack_all_candles(candles: Any) -> bytes:
    """Like pack_candles, for a call that gets every row (generate_signals): more than
    MAX_ROWS is refused, as cutting them would misalign its answer with the caller's rows."""
    array = candle_array(candles)
    if len(array) > child.MAX_ROWS:
        raise RequestError(f"too many candles: {len(array)} (at most {child.MAX_ROWS})")
    return np.ascontiguousarray(array).tobytes()


def build_request(
    *,
    code: str,
    candles: Any,
    settings: dict[str, Any],
    timeout_s: float,
    memory_mb: int,
    lookback: int | None,
    read_paths: list[str] | None = None,
    packed: bytes | None = None,
    **extra: Any,
) -> bytes:
    """The request of one execution. ``packed``: candles already packed (else ``candles`` are
    packed here, the newest MAX_LOOKBACK rows); ``extra`` header fields: ``entry``
    ("signals" for generate_signals), ``result_limit``, ``session`` and ``budget_s``."""
    if not isinstance(code, str):
        raise RequestError("invalid code: expected str")
    if not isinstance(settings, dict):
        raise RequestError("invalid settings: expected a dict")
    header = {
        "code": code,
        "settings": settings,
        "lookback": lookback,
        "timeout_s": float(timeout_s),
        "memory_mb": int(memory_mb),
        "sys_path": child_sys_path(),
        # Landlock allow-list of the cold child (the zygote gets its own at start-up).
        "read_paths": read_paths or [],
        **extra,
    }
    if packed is None:
        packed = pack_candles(candles)
    try:
        return child.encode_request(header, packed)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"invalid settings: {exc}") from None


class UnstorableResult(ValueError):
    """The child's result cannot be made storable (the message says why)."""


def storable_text(text: str, limit: int | None = None) -> str:
    """``text`` (cut to ``limit`` characters) with NUL and lone surrogates replaced by U+FFFD."""
    if limit is not None:
        text = text[:limit]
    return _UNSTORABLE_CHARS.sub("\ufffd", text)


def storable_json(value: Any, depth: int = 0) -> Any:
    """A decoded JSON value made storable: every string (keys too) through ``storable_text``;
    non-finite numbers (``1e999`` decodes to inf) and nesting beyond MAX_RESULT_DEPTH raise
    UnstorableResult."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise UnstorableResult("non-finite number")
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= MAX_RESULT_DEPTH:
        raise UnstorableResult("nested too deeply")
    if isinstance(value, list):
        return [storable_json(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {storable_text(k): storable_json(v, depth + 1) for k, v in value.items()}
    raise UnstorableResult(f"unexpected {type(value).__name__}")


def _reject_constant(name: str) -> Any:
    raise ValueError("non-finite number")


def parse_result(
    raw: bytes, limit: int = MAX_RESULT_BYTES
) -> tuple[bool, dict[str, Any] | None, str, int]:
    """Strictly parse the child's result frame -> (ok, value, error, dropped_log_bytes).
    ``limit``: the result budget of the call (MAX_RESULT_BYTES but for generate_signals)."""
    if len(raw) > limit + 64 * 1024:
        return False, None, "invalid result: result too large", 0
    try:
        # The one place the child's result is decoded: nothing unstorable gets past it.
        frame = storable_json(json.loads(raw, parse_constant=_reject_constant))
    except RecursionError:
        return False, None, "invalid result: nested too deeply", 0
    except UnstorableResult as exc:
        return False, None, f"invalid result: {exc}", 0
    except ValueError as exc:
        if "non-finite" in str(exc):
            return False, None, "invalid result: non-finite number", 0
        return False, None, "invalid result: malformed result frame", 0
    if not isinstance(frame, dict) or not isinstance(frame.get("ok"), bool):
        return False, None, "invalid result: malformed result frame", 0
    dropped = frame.get("dropped", 0)
    dropped = dropped if isinstance(dropped, int) and dropped >= 0 else 0
    if not frame["ok"]:
        error = frame.get("error")
        message = storable_text(str(error), MAX_ERROR_CHARS) if error else "strategy failed"
        return False, None, message, dropped
    value = frame.get("value")
    if value is not None and not isinstance(value, dict):
        return False, None, "invalid result: expected a dict or None", dropped
    return True, value, "", dropped


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "process ended before returning a result"
    if returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU:
            return "cpu time limit exceeded"
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"process killed by signal {name} before returning a result"
    return f"process exited with code {returncode} before returning a result"


def format_logs(outcome: RawOutcome, child_dropped: int) -> str:
    # Where the child's output is decoded (invalid UTF-8 -> U+FFFD, never a surrogate).
    text = storable_text(outcome.logs.decode("utf-8", "replace"))
    dropped = outcome.dropped + child_dropped
    if dropped:
        text += f"\n[... {dropped} bytes dropped]"
    return text
