"""Parent side of the zygote: start it lazily (one per process and isolation mode), send it
executions, restart it when it dies or when we are a forked copy of the process that started
it (Celery prefork). Thread-safe. No Django."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from . import isolation
from .protocol import (
    MAX_LOG_BYTES,
    MAX_RESULT_BYTES,
    RawOutcome,
    child_env,
    child_sys_path,
    sweep_stale_workdirs,
)

T = TypeVar("T")

STARTUP_TIMEOUT_S = 60.0
# Extra time the parent grants on top of the strategy timeout (request transfer, namespace
# setup, report) before declaring the zygote hung.
PARENT_GRACE_S = 10.0


class ZygoteError(RuntimeError):
    pass


class Zygote:
    """One sandbox zygote process and its control socket."""

    def __init__(self, mode: str) -> None:
        self.mode = mode  # 'bwrap' or 'rlimit'
        self.owner_pid = os.getpid()
        self._send_lock = threading.Lock()
        self.proc, self._ctrl = _on_keeper_thread(self._start)

    # -- lifecycle ---------------------------------------------------------------------

    def _start(self) -> tuple[subprocess.Popen[bytes], socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = self._spawn(theirs.fileno())
        except OSError as exc:
            ours.close()
            raise ZygoteError(f"could not start the sandbox: {exc}") from exc
        finally:
            theirs.close()
        try:
            self._handshake(ours, proc)
        except BaseException:
            _terminate(proc)
            ours.close()
            raise
        return proc, ours

    def _spawn(self, ctrl_fd: int) -> subprocess.Popen[bytes]:
        if self.mode == "bwrap":
            cmd, workdir, cwd = isolation.bwrap_command(ctrl_fd), isolation.WORKDIR, "/"
        else:
            script = str(isolation.SANDBOX_DIR / "zygote.py")
            cmd = [sys.executable, "-I", "-S", "-B", script, str(ctrl_fd)]
            # Each execution gets (and removes) its own directory in there; the zygote itself
            # owns nothing on disk, so a zygote killed with its worker leaves nothing behind.
            workdir = cwd = tempfile.gettempdir()
            sweep_stale_workdirs(workdir)
        bwrap = self.mode == "bwrap"
        self._config = {
            "mode": self.mode,
            "sys_path": isolation.sandbox_sys_path() if bwrap else child_sys_path(),
            "read_paths": [] if bwrap else isolation.landlock_read_paths(),
            "workdir": workdir,
            "parent_pid": os.getpid(),
        }
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd=cwd,
            env=child_env(workdir),
            pass_fds=(ctrl_fd,),
            start_new_session=True,
        )

    def _handshake(self, ctrl: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        ctrl.settimeout(STARTUP_TIMEOUT_S)
        try:
            ctrl.send(json.dumps(self._config).encode())
            answer = ctrl.recv(4096)
        except OSError as exc:
            raise ZygoteError(f"sandbox did not start: {exc}") from exc
        if not answer or not json.loads(answer).get("ready"):
            code = proc.poll()
            raise ZygoteError(f"sandbox did not start (exit code {code})")
        ctrl.settimeout(None)

    def alive(self) -> bool:
        return self.owner_pid == os.getpid() and self.proc.poll() is None

    def close(self) -> None:
        """Stop the zygote (executions in flight fail) and clean up."""
        if self.owner_pid != os.getpid():
            self._ctrl.close()  # inherited through fork: only drop our copy
            return
        self._ctrl.close()
        _terminate(self.proc)

    # -- executions --------------------------------------------------------------------

    def run(
        self, payload: bytes, timeout_s: float, result_limit: int = MAX_RESULT_BYTES
    ) -> RawOutcome:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._hand_over(b"run", [theirs])
            deadline = time.monotonic() + timeout_s + PARENT_GRACE_S
            try:
                _settimeout(ours, deadline)
                ours.sendall(payload)
                ours.shutdown(socket.SHUT_WR)
            except TimeoutError:
                self.close()  # hung: start afresh next time
                return RawOutcome(error="sandbox did not answer in time")
            except OSError as exc:
                return self._failed(exc)
            return self.read_report(ours, deadline, result_limit)
        finally:
            ours.close()

    def prepare(self) -> None:
        """Have the next execution's sandbox set up ahead (see zygote.py: the spare)."""
        try:
            with self._send_lock:
                self._ctrl.send(b"prepare")
        except OSError as exc:
            raise ZygoteError(f"sandbox is gone: {exc}") from exc

    def open_session(self, payload: bytes) -> tuple[socket.socket, socket.socket]:
        """Start a session -> (execution socket, data socket). The execution socket stays
        open for writing: shutting it down is how the session is aborted."""
        exec_ours, exec_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        data_ours, data_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._hand_over(b"session", [exec_theirs, data_theirs])
            _settimeout(exec_ours, time.monotonic() + PARENT_GRACE_S)
            exec_ours.sendall(payload)
        except BaseException:
            exec_ours.close()
            data_ours.close()
            raise
        return exec_ours, data_ours

    def _hand_over(self, kind: bytes, socks: list[socket.socket]) -> None:
        """Give the zygote our peers' ends (it forks a supervisor for them); ours are closed."""
        try:
            with self._send_lock:
                socket.send_fds(self._ctrl, [kind], [sock.fileno() for sock in socks])
        except OSError as exc:
            raise ZygoteError(f"sandbox is gone: {exc}") from exc
        finally:
            for sock in socks:
                sock.close()

    def read_report(self, sock: socket.socket, deadline: float, result_limit: int) -> RawOutcome:
        """The supervisor's report of one execution or session, read from its socket."""
        try:
            (size,) = struct.unpack(">Q", _recv_exact(sock, 8, deadline))
            if size > 1 << 20:
                raise ZygoteError("sandbox report too large")
            report = json.loads(_recv_exact(sock, size, deadline))
            logs = _recv_exact(sock, _bounded(report, "logs_len", MAX_LOG_BYTES), deadline)
            result = _recv_exact(sock, _bounded(report, "result_len", result_limit), deadline)
        except TimeoutError:
            self.close()  # hung: start afresh next time
            return RawOutcome(error="sandbox did not answer in time")
        except (OSError, EOFError, ValueError) as exc:
            return self._failed(exc)
        return _outcome_from_report(report, logs, result)

    def _failed(self, exc: BaseException) -> RawOutcome:
        if not self.alive():
            return RawOutcome(error="sandbox process died during the execution")
        return RawOutcome(error=f"sandbox supervisor failed: {exc}")


def _outcome_from_report(report: dict[str, Any], logs: bytes, result: bytes) -> RawOutcome:
    outcome = RawOutcome(result=result, error=str(report.get("error") or ""))
    outcome.logs += logs
    outcome.dropped = int(report.get("dropped") or 0)
    rc = report.get("returncode")
    outcome.returncode = rc if isinstance(rc, int) else None
    outcome.timed_out = bool(report.get("timed_out")) and not result
    outcome.child_cpu_s = float(report.get("cpu_s") or 0.0)
    return outcome


def _bounded(report: dict[str, Any], key: str, limit: int) -> int:
    value = report.get(key)
    if not isinstance(value, int) or not 0 <= value <= limit + 1024:
        raise ValueError(f"bad {key}")
    return value


def _settimeout(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    sock.settimeout(remaining)


def _recv_exact(sock: socket.socket, size: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    while size:
        _settimeout(sock, deadline)
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError("sandbox closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    # bwrap/zygote run in their own session: kill the whole group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


# --------------------------------------------------------------------------- registry

_registry_lock = threading.Lock()
_zygotes: dict[str, Zygote] = {}


def get_zygote(mode: str) -> Zygote:
    """The live zygote for ``mode`` in this process, started (or restarted) as needed."""
    with _registry_lock:
        current = _zygotes.get(mode)
        if current is not None and current.alive():
            return current
        if current is not None:
            current.close()
        zygote = Zygote(mode)
        _zygotes[mode] = zygote
        return zygote


def live_zygote(mode: str) -> Zygote | None:
    """The zygote for ``mode`` in this process if it is running; never starts one."""
    with _registry_lock:
        current = _zygotes.get(mode)
    return current if current is not None and current.alive() else None


def discard_zygote(zygote: Zygote) -> None:
    with _registry_lock:
        if _zygotes.get(zygote.mode) is zygote:
            del _zygotes[zygote.mode]
    zygote.close()


def shutdown() -> None:
    """Stop every zygote of this process (tests, worker shutdown)."""
    with _registry_lock:
        zygotes = list(_zygotes.values())
        _zygotes.clear()
    for zygote in zygotes:
        zygote.close()


# --------------------------------------------------------------------------- keeper thread
#
# bwrap --die-with-parent (and PR_SET_PDEATHSIG in the rlimit zygote) fires when the *thread*
# that forked it exits, not the process. Zygotes are therefore always spawned from one
# long-lived daemon thread per process, so a short-lived caller thread cannot take them down.

_keeper_lock = threading.Lock()
_keeper: tuple[int, queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]]] | None = None


def _on_keeper_thread(func: Callable[[], T]) -> T:
    global _keeper
    with _keeper_lock:
        if _keeper is None or _keeper[0] != os.getpid():  # none yet, or we were forked
            jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
            threading.Thread(
                target=_keeper_loop, args=(jobs,), name="sandbox-keeper", daemon=True
            ).start()
            _keeper = (os.getpid(), jobs)
        jobs = _keeper[1]
    future: Future[T] = Future()
    jobs.put((func, future))
    return future.result()


def _keeper_loop(jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]]) -> None:
    while True:
        func, future = jobs.get()
        try:
            future.set_result(func())
        except BaseException as exc:
            future.set_exception(exc)


def _reset_after_fork() -> None:
    """In a forked child (Celery prefork): locks may have been held by threads that do not
    exist here, and the parent's zygotes are not ours. Start from scratch."""
    global _registry_lock, _keeper_lock, _keeper
    _registry_lock = threading.Lock()
    _keeper_lock = threading.Lock()
    _keeper = None
    for zygote in _zygotes.values():
        with contextlib.suppress(OSError):
            zygote._ctrl.close()  # our inherited copy only; the parent's zygote lives on
    _zygotes.clear()


os.register_at_fork(after_in_child=_reset_after_fork)
# An orderly exit stops the zygotes at once; a hard one (SIGKILL, os._exit as in Celery's
# pool processes) relies on --die-with-parent / PDEATHSIG instead.
atexit.register(shutdown)
