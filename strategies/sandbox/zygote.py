"""Sandbox zygote: imports pandas/numpy/ta once, then forks one single-use child per execution.

Runs as ``python -I -S -B zygote.py CTRL_FD`` (inside bubblewrap when available). Must stay
free of project/Django imports: under bubblewrap only this file, child.py and jail.py exist.

Process tree per execution::

    zygote  (never sees execution data: it only receives a socket fd and forks)
      └─ supervisor  (reads the request, sets up namespaces / work dir, enforces the timeout,
         │            collects logs + result, reports to the parent over the execution socket)
         └─ init  (bwrap mode only: PID 1 of the execution's own PID namespace; forks the
            │      executor, reports its exit status; killing it empties the namespace)
            └─ executor  (rlimits, no capabilities, seccomp, Landlock in rlimit mode; runs
                          the strategy)

Every one of them dies with its parent (bwrap --die-with-parent / PR_SET_PDEATHSIG).

Control protocol: CTRL_FD is a SOCK_SEQPACKET socket. The first message from the parent is the
JSON config; the zygote answers ``{"ready": true}``. After that each message carries one fd: a
SOCK_STREAM socket dedicated to one execution (request in, report out), or two for a session:
that execution socket and a data socket, which becomes the executor's fd 0 (candles in,
answers out, straight between the parent and the executor: see child.run_session). A
session's supervisor enforces its budget instead of a timeout and also watches the execution
socket: the parent shutting it down (or going away) aborts the session, the executor is
killed at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import selectors
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import child
import jail

del sys.path[0]

DRAIN_GRACE_S = 0.5
STATUS_WAIT_S = 1.0
WORKDIR_SIZE_MB = 16


def main(argv: list[str]) -> None:
    ctrl = socket.socket(fileno=int(argv[1]))
    config = json.loads(ctrl.recv(1 << 20))
    sys.path[:] = config["sys_path"]
    os.environ.pop("PWD", None)  # set by bwrap --chdir; the environment stays the minimal one
    if config["mode"] == "rlimit":
        # Without bwrap's --die-with-parent: exit with the worker that started us.
        jail.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != config["parent_pid"]:
            os._exit(1)
    child.import_libraries()
    # Auto-reap supervisors: the zygote never waits for anything.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    ctrl.send(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    serve(ctrl, config)


def serve(ctrl: socket.socket, config: dict[str, Any]) -> None:
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctrl, 64, 4)
        except InterruptedError:
            continue
        except OSError:
            os._exit(0)
        if not msg:
            os._exit(0)  # parent closed the control socket: it is gone or shutting down
        if len(fds) not in (1, 2):
            _close_all(fds)
            continue
        try:
            pid = os.fork()
        except OSError:
            _close_all(fds)  # the parent sees EOF and reports the failure
            continue
        if pid == 0:
            ctrl.close()
            _run_supervisor(fds[0], config, fds[1] if len(fds) == 2 else None)
        _close_all(fds)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


# --------------------------------------------------------------------------- supervisor


def _run_supervisor(exec_fd: int, config: dict[str, Any], data_fd: int | None) -> None:
    """Never returns. Any failure is reported to the parent as a backend error. ``data_fd``:
    the data socket of a session, None for a single execution."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _die_with_parent()
    os.setsid()
    report: dict[str, Any] = {"error": ""}
    logs, result = b"", b""
    workdir = None
    try:
        header, candles = child.read_request(exec_fd)
        if bool(header.get("session")) != (data_fd is not None):
            raise ValueError("a session needs its data socket, and only a session")
        # Measured before the private /proc hides /proc/self/statm.
        baseline = child.address_space_bytes()
        workdir = _prepare_workdir(config)
        channels = _Channels(exec_fd, data_fd)
        report, logs, result = _supervise(header, candles, workdir, config, baseline, channels)
    except BaseException as exc:
        report = {"error": f"sandbox setup failed: {type(exc).__name__}: {exc}"}
    finally:
        if workdir and config["mode"] == "rlimit":
            shutil.rmtree(workdir, ignore_errors=True)
    report["cpu_s"] = report.get("cpu_s", 0.0) + _self_cpu()
    _send_report(exec_fd, report, logs, result)
    os._exit(0)


def _prepare_workdir(config: dict[str, Any]) -> str:
    if config["mode"] == "bwrap":
        # Private namespaces for this execution only; the tmpfs dies with them.
        jail.enter_private_namespaces()
        jail.mount_private_dirs(config["workdir"], WORKDIR_SIZE_MB)
        return str(config["workdir"])
    # Same naming as protocol.workdir_prefix (not importable here): swept if we get killed.
    return tempfile.mkdtemp(prefix=f"strategy-run-{os.getpid()}-", dir=config["workdir"])


class _Channels:
    """The supervisor's sockets to the parent: the execution socket (request, report; in a
    session also the abort signal) and a session's data socket (the executor's fd 0)."""

    def __init__(self, exec_fd: int, data_fd: int | None) -> None:
        self.exec_fd = exec_fd
        self.data_fd = data_fd

    def release_data(self) -> None:
        """Only the executor keeps the data socket: when it dies the parent sees EOF."""
        if self.data_fd is not None:
            os.close(self.data_fd)
            self.data_fd = None


def _supervise(
    header: dict[str, Any],
    candles: bytes,
    workdir: str,
    config: dict[str, Any],
    baseline: int,
    channels: _Channels,
) -> tuple[dict[str, Any], bytes, bytes]:
    mode = config["mode"]
    log_r, log_w = os.pipe()
    res_r, res_w = os.pipe()
    status_r, status_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(log_r)
        os.close(res_r)
        os.close(status_r)
        if mode == "bwrap":
            _run_init(header, candles, workdir, config, log_w, res_w, status_w, baseline, channels)
        os.close(status_w)
        _run_executor(header, candles, workdir, config, log_w, res_w, baseline, channels)
    os.close(log_w)
    os.close(res_w)
    os.close(status_w)
    channels.release_data()
    deadline = time.monotonic() + child.time_limit_s(header)
    abort_fd = channels.exec_fd if header.get("session") else None
    collected = _collect(
        log_r, res_r, deadline, _result_limit(header), abort_fd, lambda: _kill_executor(pid, mode)
    )
    # When the executor ended by itself, give the init process a moment to report how.
    reported = _read_status(status_r, wait_s=STATUS_WAIT_S if collected["closed"] else 0.0)
    _kill_executor(pid, mode)
    _, status, usage = os.wait4(pid, 0)
    report = {
        "error": "",
        "returncode": os.waitstatus_to_exitcode(status if reported is None else reported),
        "timed_out": collected["timed_out"],
        "dropped": collected["dropped"],
        # Includes the executor's CPU when the init process reaped it.
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }
    return report, bytes(collected["logs"]), bytes(collected["result"])


def _run_init(
    header: dict[str, Any],
    candles: bytes,
    workdir: str,
    config: dict[str, Any],
    log_w: int,
    res_w: int,
    status_w: int,
    baseline: int,
    channels: _Channels,
) -> None:
    """PID 1 of the execution's PID namespace (bwrap mode). It only forks the executor and
    reports how it ended: the strategy is never PID 1 itself, so ``kill(1)`` or
    ``kill(getppid())`` is refused like any other foreign pid, and killing this process
    (timeout) takes down everything in the namespace. Never returns."""
    try:
        _die_with_parent()
        pid = os.fork()
        if pid == 0:
            os.close(status_w)
            _run_executor(header, candles, workdir, config, log_w, res_w, baseline, channels)
        os.close(log_w)
        os.close(res_w)
        channels.release_data()
        _, status = os.waitpid(pid, 0)
        child._write_all(status_w, struct.pack(">i", status))
    finally:
        os._exit(0)


def _read_status(fd: int, wait_s: float) -> int | None:
    """The executor's wait status as reported by the init process (bwrap mode), if any."""
    try:
        readable, _, _ = select.select([fd], [], [], wait_s)
        raw = os.read(fd, 4) if readable else b""
    except OSError:
        raw = b""
    finally:
        os.close(fd)
    return int(struct.unpack(">i", raw)[0]) if len(raw) == 4 else None


def _result_limit(header: dict[str, Any]) -> int:
    return int(header.get("result_limit") or child.MAX_RESULT_BYTES)


def _collect(
    log_r: int,
    res_r: int,
    deadline: float,
    result_limit: int,
    abort_fd: int | None,
    kill: Callable[[], None],
) -> dict[str, Any]:
    """Read logs (capped) and the result until both pipes close or the deadline passes. In a
    session, anything happening on ``abort_fd`` (the parent shuts down its side to abort; a
    parent that went away does the same) kills the executor at once, then what it wrote
    before is drained."""
    sel = selectors.DefaultSelector()
    sel.register(log_r, selectors.EVENT_READ, "logs")
    sel.register(res_r, selectors.EVENT_READ, "result")
    if abort_fd is not None:
        sel.register(abort_fd, selectors.EVENT_READ, "abort")
    out: dict[str, Any] = {"logs": bytearray(), "result": bytearray(), "dropped": 0}
    out["result_limit"] = result_limit
    result_done = False
    while _pipes_open(sel):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for key, _ in sel.select(remaining):
            if key.data == "abort":
                kill()
                sel.unregister(key.fd)
                deadline = min(deadline, time.monotonic() + DRAIN_GRACE_S)
                continue
            data = os.read(key.fd, 1 << 16)
            if not data:
                sel.unregister(key.fd)
                if key.data == "result":
                    result_done = True
                    # Result is in: stray output only gets a short grace period.
                    deadline = min(deadline, time.monotonic() + DRAIN_GRACE_S)
                continue
            _append(out, key.data, data)
    out["closed"] = not _pipes_open(sel)
    sel.close()
    os.close(log_r)
    os.close(res_r)
    out["timed_out"] = not result_done
    return out


def _pipes_open(sel: selectors.BaseSelector) -> bool:
    return any(key.data != "abort" for key in sel.get_map().values())


def _append(out: dict[str, Any], stream: str, data: bytes) -> None:
    limit = child.MAX_LOG_BYTES if stream == "logs" else out["result_limit"] + 1024
    buf: bytearray = out[stream]
    room = max(0, limit - len(buf))
    buf += data[:room]
    if stream == "logs":
        out["dropped"] += len(data) - min(room, len(data))


def _kill_executor(pid: int, mode: str) -> None:
    # The executor is not reaped yet, so its pid cannot have been reused. Under bwrap it is
    # PID 1 of its namespace: killing it kills everything in the namespace.
    for kill in (os.killpg, os.kill) if mode == "rlimit" else (os.kill,):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


def _die_with_parent() -> None:
    """SIGKILL when the parent goes: a dead worker takes its zygote (bwrap --die-with-parent
    or PDEATHSIG), the zygote its supervisors, a supervisor its executor. Without this a
    sleeping strategy would outlive everything in rlimit mode, where no PID namespace
    collapses around it."""
    parent = os.getppid()
    jail.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _self_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _send_report(fd: int, report: dict[str, Any], logs: bytes, result: bytes) -> None:
    report = {**report, "logs_len": len(logs), "result_len": len(result)}
    raw = json.dumps(report).encode()
    try:
        child._write_all(fd, struct.pack(">Q", len(raw)) + raw + logs + result)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- executor


def _run_executor(
    header: dict[str, Any],
    candles: bytes,
    workdir: str,
    config: dict[str, Any],
    log_w: int,
    res_w: int,
    baseline: int,
    channels: _Channels,
) -> None:
    """Never returns: confine this process, run the strategy (or the session), write the
    result, exit."""
    try:
        _die_with_parent()
        session = channels.data_fd is not None
        _confine(workdir, config, log_w, res_w, header, baseline, channels.data_fd)
        if session:
            frame = child.run_session(header, candles, data_fd=0, log_fd=1)
        else:
            frame = child.execute(header, candles, log_fd=1)
        child.send_result(3, frame)
    except BaseException as exc:
        error = {"ok": False, "value": None, "error": f"sandbox setup failed: {exc}"}
        child._write_all(3, json.dumps(error).encode())
    os._exit(0)


def _confine(
    workdir: str,
    config: dict[str, Any],
    log_w: int,
    res_w: int,
    header: dict[str, Any],
    baseline: int,
    data_fd: int | None,
) -> None:
    mode = config["mode"]
    # A session reads its candles from fd 0 (and answers there); nothing else reads stdin.
    os.dup2(os.open(os.devnull, os.O_RDONLY) if data_fd is None else data_fd, 0)
    os.dup2(log_w, 1)
    os.dup2(log_w, 2)
    os.dup2(res_w, 3)
    os.closerange(4, 65536)  # the execution socket, the data socket's old fd, anything else
    if mode == "rlimit":
        os.setsid()  # own process group for killpg
    os.chdir(workdir)
    os.environ.update(HOME=workdir, TMPDIR=workdir)
    tempfile.tempdir = workdir
    child.apply_limits(child.time_limit_s(header), int(header["memory_mb"]), baseline)
    # Landlock only without bubblewrap: there the mount namespace already hides everything.
    read_paths = config["read_paths"] if mode == "rlimit" else []
    jail.confine(workdir=workdir, read_paths=read_paths)


if __name__ == "__main__":
    main(sys.argv)
