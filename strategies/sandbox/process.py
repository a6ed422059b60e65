"""Cold backend: one fresh ``python -I -S`` process per execution (no zygote, no bubblewrap).

Simple and robust, but every execution pays for interpreter start-up and importing pandas
(~0.6 s of CPU). Used as the fallback when the rlimit zygote cannot be started; the child
applies the same rlimits, capability drop, Landlock and seccomp as the zygote's executors."""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO

from .protocol import (
    CHILD_SCRIPT,
    MAX_RESULT_BYTES,
    READY_BYTE,
    RawOutcome,
    child_env,
    workdir_prefix,
)

# Start-up (interpreter + pandas import) must finish within this on top of the timeout.
STARTUP_GRACE_S = 20.0
# After the result arrived, how long stray output may still be collected.
DRAIN_GRACE_S = 0.2


def run_in_subprocess(
    payload: bytes, timeout_s: float, result_limit: int = MAX_RESULT_BYTES
) -> RawOutcome:
    workdir = tempfile.mkdtemp(prefix=workdir_prefix(os.getpid()))
    try:
        return _run(payload, timeout_s, workdir, result_limit)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(payload: bytes, timeout_s: float, workdir: str, result_limit: int) -> RawOutcome:
    result_r, result_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", str(CHILD_SCRIPT), str(result_w)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=child_env(workdir),
            pass_fds=(result_w,),
            # Own session + process group: killpg reaches everything it forked.
            start_new_session=True,
        )
    except OSError as exc:
        os.close(result_r)
        return RawOutcome(error=f"could not start the sandbox: {exc}")
    finally:
        os.close(result_w)
    outcome = RawOutcome()
    try:
        _pump(proc, payload, result_r, timeout_s, outcome, result_limit)
    finally:
        _kill_group(proc.pid)
        outcome.returncode, outcome.child_cpu_s = _reap(proc)
        os.close(result_r)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
    return outcome


def _reap(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Wait for the child -> (exit code or -signal, its CPU seconds)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _kill_group(pgid: int) -> None:
    # Also run after a normal exit: the child is still an unreaped zombie here, so its pgid
    # cannot have been recycled, and stragglers it forked die with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _pump(
    proc: subprocess.Popen[bytes],
    payload: bytes,
    result_r: int,
    timeout_s: float,
    outcome: RawOutcome,
    result_limit: int,
) -> None:
    """Feed the request and collect logs/result until the result pipe closes or time is up."""
    assert proc.stdin is not None and proc.stdout is not None
    stdout_fd = proc.stdout.fileno()
    os.set_blocking(proc.stdin.fileno(), False)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdin, selectors.EVENT_WRITE, "stdin")
    sel.register(stdout_fd, selectors.EVENT_READ, "stdout")
    sel.register(result_r, selectors.EVENT_READ, "result")
    pending = memoryview(payload)
    result = bytearray()
    deadline = time.monotonic() + timeout_s + STARTUP_GRACE_S
    ready = False
    open_reads = 2
    try:
        while open_reads:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                outcome.timed_out = ready and "result" in _registered(sel)
                if not ready:
                    outcome.error = "sandbox did not start in time"
                break
            for key, _ in sel.select(remaining):
                if key.data == "stdin":
                    pending = _feed(proc.stdin, pending, sel)
                    continue
                data = _read(key.fd)
                if key.data == "stdout":
                    outcome.add_logs(data)
                elif len(result) <= result_limit + 64 * 1024:
                    result += data
                if not ready and result.startswith(READY_BYTE):
                    ready = True
                    deadline = time.monotonic() + timeout_s
                if not data:
                    sel.unregister(key.fd)
                    open_reads -= 1
                    if key.data == "result":
                        # Result complete (or child gone): only a short drain of stray output.
                        deadline = min(deadline, time.monotonic() + DRAIN_GRACE_S)
    finally:
        sel.close()
    outcome.result = bytes(result[len(READY_BYTE) :]) if ready else b""


def _registered(sel: selectors.BaseSelector) -> set[str]:
    return {key.data for key in sel.get_map().values()}


def _feed(stdin: IO[bytes], pending: memoryview, sel: selectors.BaseSelector) -> memoryview:
    try:
        written = os.write(stdin.fileno(), pending)
    except BlockingIOError:
        return pending
    except OSError:  # child closed stdin early (died): stop feeding
        written = len(pending)
    pending = pending[written:]
    if not pending:
        sel.unregister(stdin)
        with contextlib.suppress(OSError):
            stdin.close()  # EOF for the child; closing via the file object avoids a double close
    return pending


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 16)
    except OSError:
        return b""
