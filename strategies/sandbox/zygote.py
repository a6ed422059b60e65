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

A single execution's supervisor can be forked ahead, as a *spare*: the parent sends
``prepare`` (no fd) when it knows an execution is coming (while it reads the database for
it), and the zygote forks a spare unless it has one. The spare sets up its namespaces and work
dir and forks its executor, which confines itself, warms up (see child.warm_up) and waits
for its request on fd 0. The next execution socket goes to the spare (to a spare forked
then, without a ``prepare``), so the forks, the namespaces and the confinement are off the
execution's path when it was prepared. A spare is used once, like any supervisor: it has seen
nothing before its execution but made-up warm-up data, and it exits after it. A session's
supervisor is forked when the session starts, as before.

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
    child.warm_up(in_zygote=True)
    # Auto-reap supervisors: the zygote never waits for anything.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    ctrl.send(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    serve(ctrl, config)


def serve(ctrl: socket.socket, config: dict[str, Any]) -> None:
    spare: socket.socket | None = None
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctrl, 64, 4)
        except InterruptedError:
            continue
        except OSError:
            os._exit(0)
        if not msg:
            os._exit(0)  # parent closed the control socket: it is gone or shutting down
        if not fds and msg == b"prepare":
            # Prepared ahead, its executor also warms up: that is off the execution's time.
            spare = spare or _start_spare(ctrl, {**config, "warm_spare": True})
        elif len(fds) == 1:
            _hand_to_spare(spare, fds[0], ctrl, config)
            spare = None
        elif len(fds) == 2:
            _fork_session(fds, ctrl, spare, config)
        else:
            _close_all(fds)


def _fork_session(
    fds: list[int], ctrl: socket.socket, spare: socket.socket | None, config: dict[str, Any]
) -> None:
    try:
        pid = os.fork()
    except OSError:
        _close_all(fds)  # the parent sees EOF and reports the failure
        return
    if pid == 0:
        ctrl.close()
        if spare is not None:
            spare.close()
        _run_supervisor(fds[0], config, fds[1])
    _close_all(fds)


def _start_spare(ctrl: socket.socket, config: dict[str, Any]) -> socket.socket | None:
    """Fork the next single execution's supervisor -> the socket its execution goes down."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return None  # tried again when an execution comes
    if pid == 0:
        ctrl.close()
        ours.close()
        _run_spare(theirs, config)
    theirs.close()
    return ours


def _hand_to_spare(
    spare: socket.socket | None, exec_fd: int, ctrl: socket.socket, config: dict[str, Any]
) -> None:
    """Give the execution socket to the spare, or to one forked now (the spare is gone or
    there was none). The zygote has no spare after this."""
    try:
        for _attempt in range(2):
            spare = spare or _start_spare(ctrl, config)
            if spare is None:
                return  # cannot fork: the parent sees EOF and reports the failure
            try:
                socket.send_fds(spare, [b"run"], [exec_fd])
                return
            except OSError:
                pass  # it died before its execution: start another
            finally:
                spare.close()
            spare = None
    finally:
        os.close(exec_fd)


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


def _run_spare(sock: socket.socket, config: dict[str, Any]) -> None:
    """A single execution's supervisor, forked before its execution: set up, start the
    executor, then wait for the execution socket. Never returns. A setup failure is
    reported to that execution as a backend error."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _die_with_parent()
    os.setsid()
    report: dict[str, Any] = {"error": ""}
    logs, result = b"", b""
    workdir, executor, failure = None, None, None
    try:
        # Measured before the private /proc hides /proc/self/statm; the host's /proc kept
        # open for the executor's CPU (read by this process only, see _early_report).
        baseline = child.address_space_bytes()
        proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        workdir = _prepare_workdir(config)
        executor = _start_executor(None, b"", workdir, config, baseline, _Channels(-1, None))
        executor.proc_fd = proc_fd
    except BaseException as exc:
        failure = exc
    exec_fd = _await_execution(sock)
    try:
        header, candles = child.read_request(exec_fd)
        if header.get("session"):
            raise ValueError("a session needs its data socket, and only a session")
        if failure is not None:
            raise failure
        assert executor is not None
        request = child.encode_request(header, candles)
        report, logs, result = _finish(header, executor, config, _Channels(exec_fd, None), request)
    except BaseException as exc:
        report = {"error": f"sandbox setup failed: {type(exc).__name__}: {exc}"}
    if executor is not None:
        executor.kill(config["mode"])
    if workdir and config["mode"] == "rlimit":
        shutil.rmtree(workdir, ignore_errors=True)
    report["cpu_s"] = report.get("cpu_s", 0.0) + _self_cpu()
    _send_report(exec_fd, report, logs, result)
    # The execution's caller has its answer: the executor's teardown is not its wait.
    if executor is not None:
        executor.reap()
    if workdir and config["mode"] == "rlimit":
        # Again once it is gone: a file it was creating as the kill came.
        shutil.rmtree(workdir, ignore_errors=True)
    os._exit(0)


def _await_execution(sock: socket.socket) -> int:
    """The execution socket, from the zygote; exits when the zygote goes without one."""
    while True:
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 1)
        except InterruptedError:
            continue
        except OSError:
            os._exit(0)
        sock.close()
        if len(fds) != 1:
            os._exit(0)
        return fds[0]


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


class _Executor:
    """The supervisor's end of its executor (under bwrap: of the init process above it)."""

    def __init__(self, pid: int, log_r: int, res_r: int, status_r: int, req_w: int) -> None:
        self.pid = pid
        self.log_r, self.res_r, self.status_r = log_r, res_r, status_r
        self.req_w = req_w  # a spare's request pipe (the executor's fd 0), else -1
        self.proc_fd = -1  # a spare's view of the host's /proc (the executor's CPU)
        self.reaped = False  # once waited for, its pid may be another process's

    def kill(self, mode: str) -> None:
        if not self.reaped:
            _kill_executor(self.pid, mode)

    def reap(self) -> None:
        if not self.reaped:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.reaped = True


def _start_executor(
    header: dict[str, Any] | None,
    candles: bytes,
    workdir: str,
    config: dict[str, Any],
    baseline: int,
    channels: _Channels,
) -> _Executor:
    """Fork the executor (bwrap: the init process, which forks it). ``header`` None: a spare,
    whose executor reads its request from a pipe once it is confined."""
    log_r, log_w = os.pipe()
    res_r, res_w = os.pipe()
    status_r, status_w = os.pipe()
    req_r, req_w = os.pipe() if header is None else (-1, -1)
    pid = os.fork()
    if pid == 0:
        _close_all([fd for fd in (log_r, res_r, status_r, req_w) if fd >= 0])
        pipes = _Pipes(log_w, res_w, req_r)
        if config["mode"] == "bwrap":
            _run_init(header, candles, workdir, config, pipes, status_w, baseline, channels)
        os.close(status_w)
        _run_executor(header, candles, workdir, config, pipes, baseline, channels)
    _close_all([fd for fd in (log_w, res_w, status_w, req_r) if fd >= 0])
    return _Executor(pid, log_r, res_r, status_r, req_w)


class _Pipes:
    """The executor's ends: logs (its fds 1 and 2), result (fd 3), a spare's request."""

    def __init__(self, log_w: int, res_w: int, req_r: int) -> None:
        self.log_w, self.res_w, self.req_r = log_w, res_w, req_r

    def close(self) -> None:
        _close_all([fd for fd in (self.log_w, self.res_w, self.req_r) if fd >= 0])


def _supervise(
    header: dict[str, Any],
    candles: bytes,
    workdir: str,
    config: dict[str, Any],
    baseline: int,
    channels: _Channels,
) -> tuple[dict[str, Any], bytes, bytes]:
    executor = _start_executor(header, candles, workdir, config, baseline, channels)
    channels.release_data()
    return _finish(header, executor, config, channels, b"")


def _finish(
    header: dict[str, Any],
    executor: _Executor,
    config: dict[str, Any],
    channels: _Channels,
    request: bytes,
) -> tuple[dict[str, Any], bytes, bytes]:
    """Send a spare's executor its ``request``, then collect until the executor is done."""
    mode, pid = config["mode"], executor.pid
    deadline = time.monotonic() + child.time_limit_s(header)
    if executor.req_w >= 0:
        # Nothing is read back before the request is written: the executor reads it whole
        # before it runs anything, and the deadline covers a stuck one.
        try:
            child._write_all(executor.req_w, request)
        finally:
            os.close(executor.req_w)
    abort_fd = channels.exec_fd if header.get("session") else None
    collected = _collect(
        executor.log_r,
        executor.res_r,
        deadline,
        _result_limit(header),
        abort_fd,
        lambda: _kill_executor(pid, mode),
        early=executor.req_w >= 0,
    )
    if collected["early"]:
        return _early_report(executor, mode, collected)
    # When the executor ended by itself, give the init process a moment to report how.
    wait_s = STATUS_WAIT_S if collected["closed"] else 0.0
    reported = _read_status(executor.status_r, wait_s=wait_s)
    _kill_executor(pid, mode)
    _, status, usage = os.wait4(pid, 0)
    executor.reaped = True
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
    header: dict[str, Any] | None,
    candles: bytes,
    workdir: str,
    config: dict[str, Any],
    pipes: _Pipes,
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
            _run_executor(header, candles, workdir, config, pipes, baseline, channels)
        pipes.close()
        channels.release_data()
        _, status = os.waitpid(pid, 0)
        child._write_all(status_w, struct.pack(">i", status))
    finally:
        os._exit(0)


def _early_report(
    executor: _Executor, mode: str, collected: dict[str, Any]
) -> tuple[dict[str, Any], bytes, bytes]:
    """The report of an executor that has written its whole result, before it has exited:
    no exit status (the result says how it ended), its CPU read from /proc while it is
    still there. The caller kills and reaps it after sending the report."""
    report = {
        "error": "",
        "returncode": None,
        "timed_out": False,
        "dropped": collected["dropped"],
        "cpu_s": _executor_cpu_s(executor, mode),
    }
    return report, bytes(collected["logs"]), bytes(collected["result"])


def _executor_cpu_s(executor: _Executor, mode: str) -> float:
    """CPU of the executor (and, under bwrap, of the init process above it) so far, from
    the scheduler's nanosecond count; 0 for what /proc does not show. Its exit, after the
    report, is not in it."""
    pids = [str(executor.pid)]
    if mode == "bwrap":
        pids += _read_proc(executor.proc_fd, f"{executor.pid}/task/{executor.pid}/children").split()
    total_ns = 0
    for pid in pids:
        fields = _read_proc(executor.proc_fd, f"{pid}/schedstat").split()
        if fields and fields[0].isdigit():
            total_ns += int(fields[0])
    return total_ns / 1e9


def _read_proc(proc_fd: int, path: str) -> str:
    if proc_fd < 0:
        return ""
    try:
        fd = os.open(path, os.O_RDONLY, dir_fd=proc_fd)
    except OSError:
        return ""
    try:
        return os.read(fd, 4096).decode(errors="replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


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
    early: bool = False,
) -> dict[str, Any]:
    """Read logs (capped) and the result until both pipes close or the deadline passes. In a
    session, anything happening on ``abort_fd`` (the parent shuts down its side to abort; a
    parent that went away does the same) kills the executor at once, then what it wrote
    before is drained.

    ``early``: stop as soon as a result has been written whole, with the logs already in
    their pipe (``out["early"]``). The executor writes its logs synchronously and cannot
    fork or start threads (seccomp), so nothing of it is still to come but its exit; a
    strategy that writes a result frame itself only ends its own execution sooner."""
    sel = selectors.DefaultSelector()
    sel.register(log_r, selectors.EVENT_READ, "logs")
    sel.register(res_r, selectors.EVENT_READ, "result")
    if abort_fd is not None:
        sel.register(abort_fd, selectors.EVENT_READ, "abort")
    out: dict[str, Any] = {"logs": bytearray(), "result": bytearray(), "dropped": 0}
    out["early"] = False
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
                if key.data == "result" and early and out["result"]:
                    _drain(log_r, out)
                    out["early"] = result_done = True
                    break
                if key.data == "result":
                    result_done = True
                    # Result is in: stray output only gets a short grace period.
                    deadline = min(deadline, time.monotonic() + DRAIN_GRACE_S)
                continue
            _append(out, key.data, data)
        if out["early"]:
            break
    out["closed"] = not _pipes_open(sel)
    sel.close()
    os.close(log_r)
    os.close(res_r)
    out["timed_out"] = not result_done
    return out


def _drain(fd: int, out: dict[str, Any]) -> None:
    """What is in the log pipe now, without waiting for more."""
    os.set_blocking(fd, False)
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while data := os.read(fd, 1 << 16):
            _append(out, "logs", data)


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
    header: dict[str, Any] | None,
    candles: bytes,
    workdir: str,
    config: dict[str, Any],
    pipes: _Pipes,
    baseline: int,
    channels: _Channels,
) -> None:
    """Never returns: confine this process, run the strategy (or the session), write the
    result, exit. ``header`` None: a spare, confined and warmed up before it reads its
    request from fd 0."""
    try:
        _die_with_parent()
        session = channels.data_fd is not None
        _confine(workdir, config, pipes, channels.data_fd)
        if header is None:
            header, candles = _await_request(baseline, bool(config.get("warm_spare")))
        else:
            child.apply_limits(child.time_limit_s(header), int(header["memory_mb"]), baseline)
        if session:
            frame = child.run_session(header, candles, data_fd=0, log_fd=1)
        else:
            frame = child.execute(header, candles, log_fd=1)
        child.send_result(3, frame)
    except BaseException as exc:
        error = {"ok": False, "value": None, "error": f"sandbox setup failed: {exc}"}
        child._write_all(3, json.dumps(error).encode())
    os._exit(0)


# A spare executor's /dev/null while fd 0 is its request pipe; it becomes fd 0 once the
# request is read, so the strategy finds the same descriptors (0 to 3) as any other.
_SPARE_NULL_FD = 4


def _confine(workdir: str, config: dict[str, Any], pipes: _Pipes, data_fd: int | None) -> None:
    """Everything but the rlimits (which depend on the request): descriptors, work dir,
    capabilities, Landlock, seccomp."""
    mode = config["mode"]
    null = os.open(os.devnull, os.O_RDONLY)
    # A session reads its candles from fd 0 (and answers there); a spare its request; nothing
    # else reads stdin.
    os.dup2(data_fd if data_fd is not None else pipes.req_r if pipes.req_r >= 0 else null, 0)
    os.dup2(pipes.log_w, 1)
    os.dup2(pipes.log_w, 2)
    os.dup2(pipes.res_w, 3)
    keep = 4
    if pipes.req_r >= 0:
        os.dup2(null, _SPARE_NULL_FD)
        keep = _SPARE_NULL_FD + 1
    os.closerange(keep, 65536)  # the execution socket, the data socket's old fd, anything else
    if mode == "rlimit":
        os.setsid()  # own process group for killpg
    os.chdir(workdir)
    os.environ.update(HOME=workdir, TMPDIR=workdir)
    tempfile.tempdir = workdir
    # Landlock only without bubblewrap: there the mount namespace already hides everything.
    read_paths = config["read_paths"] if mode == "rlimit" else []
    jail.confine(workdir=workdir, read_paths=read_paths)


def _await_request(baseline: int, warm: bool) -> tuple[dict[str, Any], bytes]:
    """A spare's executor, confined: warm up (``warm``: prepared ahead), then read the request
    (fd 0 to its end), put /dev/null in its place and apply the request's limits."""
    if warm:
        child.warm_up(in_zygote=False)
    child.hold_memory_reserve()
    header, candles = child.read_request(0)
    os.dup2(_SPARE_NULL_FD, 0)
    os.close(_SPARE_NULL_FD)
    child.apply_limits(child.time_limit_s(header), int(header["memory_mb"]), baseline)
    return header, candles


if __name__ == "__main__":
    main(sys.argv)
