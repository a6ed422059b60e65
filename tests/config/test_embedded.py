"""The embedded Redis lives as long as its users: the last process out stops it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from config.embedded import _socket_answers

# A user of the embedded server: ensures it, then waits for a line on stdin before exiting.
USER = """
import sys
from pathlib import Path
from config.embedded import ensure_embedded_redis
print(ensure_embedded_redis(Path(sys.argv[1])), flush=True)
sys.stdin.readline()
"""


def _start_user(var_dir: Path) -> subprocess.Popen[str]:
    user = subprocess.Popen(
        [sys.executable, "-c", USER, str(var_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert user.stdout is not None and user.stdout.readline().startswith("unix://")
    return user


def _stop_user(user: subprocess.Popen[str]) -> None:
    user.communicate("\n", timeout=30)
    assert user.returncode == 0


def test_a_one_off_process_leaves_no_server_behind(tmp_path):
    # given a process that used the embedded Redis
    user = _start_user(tmp_path)
    assert _socket_answers(tmp_path / "redis.sock")

    # when it exits
    _stop_user(user)

    # then the server is gone
    assert not _socket_answers(tmp_path / "redis.sock")
    assert not (tmp_path / "redis.pid").exists()


def test_the_server_stays_while_another_process_uses_it(tmp_path):
    # given two processes sharing the embedded Redis
    first, second = _start_user(tmp_path), _start_user(tmp_path)

    # when the one that started it exits
    _stop_user(first)

    # then the other still has its server, until it exits too
    assert _socket_answers(tmp_path / "redis.sock")
    _stop_user(second)
    assert not _socket_answers(tmp_path / "redis.sock")
