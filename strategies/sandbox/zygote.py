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
SOCK_STREAM socket dedicated to one execution (request in, report out).
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
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        try:
            pid = os.fork()
        except OSError:
            os.close(fds[0])  # the parent sees EOF and reports the failure
            continue
        if pid == 0:
            ctrl.close()
            _run_supervisor(fds[0], config)
        os.close(fds[0])


# --------------------------------------------------------------------------- supervisor


def _run_supervisor(exec_fd: int, config: dict[str, Any]) -> None:
    """Never returns. Any failure is reported to the parent as a backend error."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _die_with_parent()
    os.setsid()
    report: dict[str, Any] = {"error": ""}
    logs, result = b"", b""
    workdir = None
    try:
        header, candles = child.read_request(exec_fd)
        # Measured before the private /proc hides /proc/self/statm.
        baseline = child.address_space_bytes()
        workdir = _prepare_workdir(config)
        report, logs, result = _supervise(header, candles, workdir, config, baseline)
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


def _supervise(
    header: dict[str, Any], candles: bytes, workdir: str, config: dict[str, Any], baseline: int
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
            _run_init(header, candles, workdir, config, log_w, res_w, status_w, baseline)
        os.close(status_w)
        _run_executor(header, candles, workdir, config, log_w, res_w, baseline)
    os.close(log_w)
    os.close(res_w)
    os.close(status_w)
    deadline = time.monotonic() + float(header["timeout_s"])
    collected = _collect(log_r, res_r, deadline)
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
            _run_executor(header, candles, workdir, config, log_w, res_w, baseline)
        os.close(log_w)
        os.close(res_w)
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


def _collect(log_r: int, res_r: int, deadline: float) -> dict[str, Any]:
    """Read logs (capped) and the result until both pipes close or the deadline passes."""
    sel = selectors.DefaultSelector()
    sel.register(log_r, selectors.EVENT_READ, "logs")
    sel.register(res_r, selectors.EVENT_READ, "result")
    out: dict[str, Any] = {"logs": bytearray(), "result": bytearray(), "dropped": 0}
    result_done = False
    while sel.get_map():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for key, _ in sel.select(remaining):
            data = os.read(key.fd, 1 << 16)
            if not data:
                sel.unregister(key.fd)
                if key.data == "result":
                    result_done = True
                    # Result is in: stray output only gets a short grace period.
                    deadline = min(deadline, time.monotonic() + DRAIN_GRACE_S)
                continue
            _append(out, key.data, data)
    out["closed"] = not sel.get_map()
    sel.close()
    os.close(log_r)
    os.close(res_r)
    out["timed_out"] = not result_done
    return out


def _append(out: dict[str, Any], stream: str, data: bytes) -> None:
    limit = child.MAX_LOG_BYTES if stream == "logs" else child.MAX_RESULT_BYTES + 1024
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
) -> None:
    """Never returns: confine this process, run the strategy, write the result, exit."""
    try:
        _die_with_parent()
        _confine(workdir, config, log_w, res_w, header, baseline)
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
) -> None:
    mode = config["mode"]
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log_w, 1)
    os.dup2(log_w, 2)
    os.dup2(res_w, 3)
    os.closerange(4, 65536)  # the execution socket and anything inherited
    if mode == "rlimit":
        os.setsid()  # own process group for killpg
    os.chdir(workdir)
    os.environ.update(HOME=workdir, TMPDIR=workdir)
    tempfile.tempdir = workdir
    child.apply_limits(float(header["timeout_s"]), int(header["memory_mb"]), baseline)
    # Landlock only without bubblewrap: there the mount namespace already hides everything.
    read_paths = config["read_paths"] if mode == "rlimit" else []
    jail.confine(workdir=workdir, read_paths=read_paths)


if __name__ == "__main__":
    main(sys.argv)
