"""The prepared sandbox (prepare_sandbox: the zygote's spare supervisor and executor, set up
before their execution) confines and isolates an execution exactly like one set up on
demand, is used once, and leaves nothing behind."""

from __future__ import annotations

import os
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest

from strategies.sandbox import (
    SandboxResult,
    isolation,
    prepare_sandbox,
    run_strategy,
    sandbox_warm,
    zygote_client,
)

BWRAP_USABLE, BWRAP_REASON = isolation.bwrap_status()
MODES = [
    pytest.param(
        "bwrap",
        marks=pytest.mark.skipif(not BWRAP_USABLE, reason=f"bwrap unusable: {BWRAP_REASON}"),
    ),
    "rlimit",
]
CANDLES = [[1_700_000_000_000 + i * 60_000, 1.0, 2.0, 0.5, 1.5 + i, 10.0] for i in range(200)]
TRIVIAL = """
def generate_signal(candles, settings):
    return {"signal": "HOLD", "n": len(candles)}
"""


@pytest.fixture(autouse=True)
def _own_zygotes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Zygotes of this test only, their work directories in a directory of their own."""
    zygote_client.shutdown()
    previous = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("spare-tmp"))
    yield
    zygote_client.shutdown()
    tempfile.tempdir = previous


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(code: str, mode: str, **kwargs: object) -> SandboxResult:
    params: dict = {"candles": CANDLES, "settings": {}, "timeout_s": 5.0, "isolation_mode": mode}
    params.update(kwargs)
    return run_strategy(code=textwrap.dedent(code), **params)


def prepared_run(code: str, mode: str, **kwargs: object) -> SandboxResult:
    """Prepare, wait until the spare is there, run."""
    before = _descendants(os.getpid())
    prepare_sandbox(isolation_mode=mode)
    assert _eventually(lambda: len(_descendants(os.getpid()) - before) >= 2), "no spare"
    return run(code, mode, **kwargs)


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            if pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


def _eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _work_files() -> list[str]:
    return os.listdir(tempfile.gettempdir())


def test_a_prepared_sandbox_runs_the_next_execution_and_is_gone_after(mode: str) -> None:
    assert run(TRIVIAL, mode).ok  # the zygote is started by a first execution
    idle = _descendants(os.getpid())

    result = prepared_run(TRIVIAL, mode)

    assert result.ok, result.error
    assert result.value == {"signal": "HOLD", "n": 100}
    assert _eventually(lambda: _descendants(os.getpid()) <= idle), "the spare was left behind"
    assert _eventually(lambda: not _work_files()), _work_files()


def test_preparing_twice_keeps_one_spare(mode: str) -> None:
    assert run(TRIVIAL, mode).ok
    idle = _descendants(os.getpid())
    prepare_sandbox(isolation_mode=mode)
    assert _eventually(lambda: len(_descendants(os.getpid()) - idle) >= 2)
    time.sleep(0.5)  # a spare is ready by now: nothing more may appear
    spare = _descendants(os.getpid()) - idle

    prepare_sandbox(isolation_mode=mode)
    time.sleep(0.5)

    assert _descendants(os.getpid()) - idle == spare


def test_preparing_starts_no_zygote(mode: str) -> None:
    others = _descendants(os.getpid())  # none of this test's

    prepare_sandbox(isolation_mode=mode)

    assert zygote_client.live_zygote(mode) is None
    time.sleep(0.2)
    assert _descendants(os.getpid()) <= others


def test_a_spare_dies_with_its_zygote(mode: str) -> None:
    others = _descendants(os.getpid())  # none of this test's
    assert run(TRIVIAL, mode).ok
    idle = _descendants(os.getpid())
    prepare_sandbox(isolation_mode=mode)
    assert _eventually(lambda: len(_descendants(os.getpid()) - idle) >= 2)

    zygote_client.shutdown()

    assert _eventually(lambda: _descendants(os.getpid()) <= others), _descendants(os.getpid())


def test_warming_a_process_starts_its_zygote_and_leaves_a_prepared_sandbox(mode: str) -> None:
    # given a process without a zygote, as a worker's pool process that just started
    others = _descendants(os.getpid())

    # when it warms its sandbox (STRATEGY_SANDBOX_WARM)
    warmed = sandbox_warm(isolation_mode=mode)

    # then its zygote runs, and a spare beside it: the first execution uses it, leaving the
    # zygote alone (at least the spare's supervisor and executor fewer processes)
    assert warmed == mode
    assert zygote_client.live_zygote(mode) is not None
    assert _eventually(lambda: len(_descendants(os.getpid()) - others) >= 3)
    time.sleep(0.5)  # a spare is ready by now
    ready = _descendants(os.getpid()) - others
    result = run(TRIVIAL, mode)
    assert result.ok, result.error
    assert _eventually(lambda: len(ready - (_descendants(os.getpid()) - others)) >= 2)


@pytest.mark.parametrize("isolation_mode", ["cold", "no-such-mode"])
def test_warming_without_a_zygote_to_start_does_nothing(isolation_mode: str) -> None:
    # given a process whose executions would run in cold processes, or are refused
    others = _descendants(os.getpid())

    # when it warms its sandbox
    warmed = sandbox_warm(isolation_mode=isolation_mode)

    # then nothing was started, and it said so without raising
    assert warmed == ""
    time.sleep(0.2)
    assert _descendants(os.getpid()) <= others


# Only the spin is meant to meet its time limit: the others get enough wall time to reach
# their own limit on a loaded machine (with both cores busy, the memory case once met a 1 s
# limit before it had filled 256 MiB), so each case tests the limit it names.
@pytest.mark.parametrize(
    ("body", "error", "timeout_s"),
    [
        ("os.fork()", "exception: PermissionError: [Errno 1] Operation not permitted", 10.0),
        ("os.kill(os.getppid(), signal.SIGKILL)", "exception: PermissionError", 10.0),
        ("os.kill(1, signal.SIGKILL)", "exception: PermissionError", 10.0),
        ("socket.socket()", "exception: PermissionError", 10.0),
        ("x = [b'x' * 10**7 for _ in range(1000)]", "memory limit exceeded (256 MiB)", 10.0),
        ("while True:\n        pass", "timeout after 1.0 s", 1.0),
    ],
)
def test_a_prepared_sandbox_confines_its_execution(
    mode: str, body: str, error: str, timeout_s: float
) -> None:
    assert run(TRIVIAL, mode).ok
    code = f"import os, signal, socket\ndef generate_signal(c, s):\n    {body}\n"

    result = prepared_run(code, mode, memory_mb=256, timeout_s=timeout_s)

    assert not result.ok
    assert result.error.startswith(error), result.error
    assert run(TRIVIAL, mode).ok  # the zygote and the next execution are unharmed


LEAVE = """
import builtins, os, sys, pandas
def generate_signal(c, s):
    builtins.left_behind = 1
    pandas.left_behind = 1
    os.environ["LEFT_BEHIND"] = "1"
    sys.modules["left_behind"] = sys
    open("left-behind", "w").write("x")
    return {"pid": os.getpid()}
"""
FIND = """
import builtins, os, sys, pandas
def generate_signal(c, s):
    return {
        "builtins": hasattr(builtins, "left_behind"),
        "pandas": hasattr(pandas, "left_behind"),
        "environ": "LEFT_BEHIND" in os.environ,
        "modules": "left_behind" in sys.modules,
        "files": os.listdir("."),
    }
"""


def test_prepared_executions_share_nothing(mode: str) -> None:
    assert run(TRIVIAL, mode).ok
    assert prepared_run(LEAVE, mode).ok

    result = prepared_run(FIND, mode)

    assert result.ok, result.error
    assert result.value == {
        "builtins": False,
        "pandas": False,
        "environ": False,
        "modules": False,
        "files": [],
    }


DESCRIPTORS = """
import os, sys
def generate_signal(c, s):
    open_fds = []
    for fd in range(64):
        try:
            os.fstat(fd)
            open_fds.append(fd)
        except OSError:
            pass
    return {"fds": open_fds, "stdin": os.read(0, 10).decode()}
"""


def test_a_prepared_execution_has_the_same_descriptors(mode: str) -> None:
    unprepared = run(DESCRIPTORS, mode)

    prepared = prepared_run(DESCRIPTORS, mode)

    assert prepared.ok, prepared.error
    assert prepared.value == unprepared.value == {"fds": [0, 1, 2, 3], "stdin": ""}
