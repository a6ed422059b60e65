"""Tests of the strategy sandbox itself (no database needed).

The hostile suite runs every case with bubblewrap ("bwrap", skipped where it is unusable) and
without it ("rlimit": the zygote with rlimits, seccomp, Landlock and a clean environment), and
the most important ones also in "cold" mode (one fresh process per execution, the fallback
when no zygote can start). Assertions that need namespaces are skipped without bubblewrap;
file-system ones without bubblewrap need Landlock in the kernel and are skipped otherwise.
Each hostile case goes through ``hostile()``, which also checks that nothing leaked: no
secret in the result, no process left behind, no files left in the work directories, and
the zygote unharmed."""

from __future__ import annotations

import glob
import logging
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from strategies.sandbox import (
    CodeCheck,
    SandboxResult,
    dry_run,
    inspect_code,
    isolation,
    run_strategy,
    zygote_client,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BWRAP_USABLE, BWRAP_REASON = isolation.bwrap_status()
LANDLOCK = isolation.landlock_usable()
BWRAP = pytest.param(
    "bwrap", marks=pytest.mark.skipif(not BWRAP_USABLE, reason=f"bwrap unusable: {BWRAP_REASON}")
)
MODES = [BWRAP, "rlimit"]
ALL_MODES = [BWRAP, "rlimit", "cold"]
# Put in this process's environment before any zygote starts: it must never come back.
CANARY = "canary-secret-7f3a9c"

CANDLES = [[1_700_000_000_000 + i * 60_000, 1.0, 2.0, 0.5, 1.5 + i, 10.0] for i in range(200)]

TRIVIAL = """
def generate_signal(candles, settings):
    return {"signal": "HOLD", "price": float(candles["close"].iloc[-1]),
            "stopLoss": None, "takeProfit": None, "metadata": {"n": len(candles)}}
"""


@pytest.fixture(scope="module", autouse=True)
def _fresh_zygotes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Zygotes started for this module only, after a canary secret was put in the
    environment, with their work directories in a directory of their own (so that the leak
    checks are not confused by other test runs sharing /tmp)."""
    zygote_client.shutdown()
    previous = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("sandbox-tmp"))
    os.environ["SANDBOX_CANARY_SECRET"] = CANARY
    yield
    zygote_client.shutdown()
    os.environ.pop("SANDBOX_CANARY_SECRET", None)
    tempfile.tempdir = previous


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=ALL_MODES)
def any_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(code: str, **kwargs: object) -> SandboxResult:
    params: dict = {"candles": CANDLES, "settings": {}, "timeout_s": 5.0}
    params.update(kwargs)
    return run_strategy(code=textwrap.dedent(code), **params)


# --------------------------------------------------------------------------- happy path


def test_trivial_strategy_returns_its_dict() -> None:
    result = run(TRIVIAL)
    assert result.ok, result.error
    assert result.value == {
        "signal": "HOLD",
        "price": 200.5,
        "stopLoss": None,
        "takeProfit": None,
        "metadata": {"n": 100},
    }
    assert result.error == ""
    assert result.isolation in {"bwrap", "rlimit"}
    assert result.duration_ms > 0


def test_candles_frame_matches_contract() -> None:
    code = """
    import pandas as pd
    LOOKBACK = 20
    def generate_signal(candles, settings):
        ts = candles["timestamp"]
        return {
            "columns": list(candles.columns),
            "n": len(candles),
            "tz": str(ts.dt.tz),
            "first": ts.iloc[0].isoformat(),
            "dtypes": sorted({str(candles[c].dtype) for c in candles.columns[1:]}),
            "settings": settings,
            "is_ts": isinstance(ts.iloc[-1], pd.Timestamp),
        }
    """
    result = run(code, settings={"k": [1, "a"]})
    assert result.ok, result.error
    value = result.value
    assert value is not None
    assert value["columns"] == ["timestamp", "open", "high", "low", "close", "volume"]
    assert value["n"] == 20
    assert value["tz"] == "UTC"
    first = pd.Timestamp(CANDLES[-20][0], unit="ms", tz="UTC")
    assert value["first"] == first.isoformat()
    assert value["dtypes"] == ["float64"]
    assert value["settings"] == {"k": [1, "a"]}
    assert value["is_ts"] is True


def test_lookback_argument_overrides_module_constant() -> None:
    result = run("LOOKBACK = 5\n" + TRIVIAL, lookback=150)
    assert result.ok, result.error
    assert result.value is not None and result.value["metadata"]["n"] == 150


def test_none_means_hold_and_prints_are_logged() -> None:
    result = run("def generate_signal(c, s):\n    print('hi', len(c))\n    return None\n")
    assert result.ok, result.error
    assert result.value is None
    assert result.logs == "hi 100\n"


def test_ta_numpy_and_numpy_scalars_are_available() -> None:
    code = """
    import numpy as np
    import ta
    def generate_signal(candles, settings):
        rsi = ta.momentum.RSIIndicator(candles["close"], window=14).rsi()
        return {"rsi": rsi.iloc[-1], "n": np.int64(3), "flag": np.bool_(True)}
    """
    result = run(code)
    assert result.ok, result.error
    assert result.value == {"rsi": 100.0, "n": 3, "flag": True}


def test_dry_run_is_run_strategy() -> None:
    result = dry_run(code=TRIVIAL, candles=CANDLES, settings={})
    assert result.ok, result.error


def test_empty_candles_are_allowed() -> None:
    result = run("def generate_signal(c, s):\n    return {'n': len(c)}\n", candles=[])
    assert result.ok, result.error
    assert result.value == {"n": 0}


# --------------------------------------------------------------------------- failures


def test_exception_reports_strategy_line_and_traceback() -> None:
    code = (
        "import math\n\n\ndef helper(x):\n    return x / 0\n\n"
        "def generate_signal(c, s):\n    return helper(1)\n"
    )
    result = run(code)
    assert not result.ok
    assert result.error.startswith("exception: ZeroDivisionError: division by zero (line 5)")
    assert 'File "<strategy>", line 8, in generate_signal' in result.error
    assert "sandbox" not in result.error  # no frames of the runner itself


def test_syntax_error() -> None:
    result = run("def generate_signal(c, s):\n    return (\n")
    assert not result.ok
    assert result.error.startswith("syntax error:")
    assert "(line 2)" in result.error


def test_missing_function() -> None:
    result = run("x = 1\n")
    assert not result.ok
    assert "generate_signal" in result.error


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ("float('nan')", "invalid result: expected a dict or None, got float"),
        ("{'price': float('inf')}", "invalid result: non-finite number"),
        ("{'price': float('nan')}", "invalid result: non-finite number"),
        ("[1, 2]", "invalid result: expected a dict or None, got list"),
        ("{'x': object()}", "invalid result: object is not JSON serializable"),
    ],
)
def test_invalid_results(returned: str, message: str) -> None:
    result = run(f"def generate_signal(c, s):\n    return {returned}\n")
    assert not result.ok
    assert result.error == message
    assert result.value is None


def test_invalid_arguments_fail_cleanly() -> None:
    result = run(TRIVIAL, candles=[[1, 2, 3]])
    assert not result.ok and result.error.startswith("invalid candles")
    result = run(TRIVIAL, settings={"x": float("nan")})
    assert not result.ok and result.error.startswith("invalid settings")


# --------------------------------------------------------------------------- inspect_code


def test_inspect_code_ok_and_lookback() -> None:
    assert inspect_code("LOOKBACK = 250\ndef generate_signal(candles, settings):\n    pass\n") == (
        CodeCheck(True, "", 250)
    )
    assert inspect_code(TRIVIAL).lookback is None


@pytest.mark.parametrize(
    ("code", "fragment", "line"),
    [
        ("def generate_signal(c, s):\n    return (\n", "syntax error", 2),
        ("def other(c, s):\n    pass\n", "not defined", None),
        ("generate_signal = 3\n", "not defined", None),
        ("def generate_signal(c):\n    pass\n", "2 parameters", 1),
        ("\nasync def generate_signal(c, s):\n    pass\n", "async", 2),
        ("LOOKBACK = 0\ndef generate_signal(c, s):\n    pass\n", "LOOKBACK", 1),
        ("LOOKBACK = 5001\ndef generate_signal(c, s):\n    pass\n", "LOOKBACK", 1),
    ],
)
def test_inspect_code_errors(code: str, fragment: str, line: int | None) -> None:
    check = inspect_code(code)
    assert not check.ok
    assert fragment in check.error
    assert check.line == line


# --------------------------------------------------------------------------- hostile
#
# Every hostile strategy must end with ok=False and a specific, readable error, quickly, and
# leave the test process (standing in for the Celery worker) and the zygote intact.


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


def _leftover_work_files() -> list[str]:
    """Anything in the private temp dir: executions must remove their work directories."""
    return glob.glob(os.path.join(tempfile.gettempdir(), "*"))


def _eventually(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def hostile(code: str, mode: str, **kwargs: object) -> SandboxResult:
    """Run a hostile strategy and check that nothing leaked, whatever it did."""
    zygote = None if mode == "cold" else zygote_client.get_zygote(mode)
    processes = _descendants(os.getpid())
    result = run(code, isolation_mode=mode, **kwargs)
    assert CANARY not in repr(result), "a secret of the worker reached the strategy"
    assert result.isolation == ("rlimit" if mode == "cold" else mode)
    # (Processes may have gone meanwhile: the previous execution's supervisor exiting.)
    assert _eventually(lambda: _descendants(os.getpid()) <= processes), (
        f"processes left behind: {_descendants(os.getpid()) - processes}"
    )
    assert _eventually(lambda: not _leftover_work_files()), _leftover_work_files()
    if zygote is not None:
        assert zygote.alive(), "the zygote died"
        assert zygote_client.get_zygote(mode) is zygote
    return result


def _zygote_pid(mode: str) -> int:
    return zygote_client.get_zygote(mode).proc.pid


def _fs_isolated(mode: str) -> bool:
    return mode == "bwrap" or LANDLOCK


def _skip_fs_assertions_without_isolation(mode: str) -> None:
    if not _fs_isolated(mode):
        pytest.skip("without bubblewrap and without Landlock the host file system is visible")


LOOP = "def generate_signal(c, s):\n    while True:\n        pass\n"


def test_infinite_loop_times_out(any_mode: str) -> None:
    result = hostile(LOOP, any_mode, timeout_s=2)
    assert not result.ok
    assert result.error == "timeout after 2.0 s"
    # The strategy's clock starts when it is ready to run (a cold start is not its fault).
    startup_ms = 4000 if any_mode == "cold" else 0
    assert 1900 < result.duration_ms < 3500 + startup_ms


def test_sleeping_strategy_times_out(mode: str) -> None:
    code = "import time\ndef generate_signal(c, s):\n    print('zz')\n    time.sleep(60)\n"
    result = hostile(code, mode, timeout_s=1)
    assert result.error == "timeout after 1.0 s"
    assert result.logs == "zz\n"  # output written before the kill is kept


MEMORY_BOMB = (
    "def generate_signal(c, s):\n    x = []\n    while True:\n        x.append(b'x' * 10**7)\n"
)


def test_memory_bomb(any_mode: str) -> None:
    result = hostile(MEMORY_BOMB, any_mode, memory_mb=300)
    assert not result.ok
    assert result.error == "memory limit exceeded (300 MiB)"


def test_single_huge_allocation(mode: str) -> None:
    code = (
        "import numpy as np\ndef generate_signal(c, s):\n    return {'n': np.ones(10**9).sum()}\n"
    )
    result = hostile(code, mode, memory_mb=256)
    assert result.error == "memory limit exceeded (256 MiB)"


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("while True:\n        os.fork()", 4),
        ("subprocess.run(['true'])", 3),
        ("multiprocessing.Process(target=print).start()", 3),
    ],
)
def test_fork_bomb_and_subprocesses_are_refused(any_mode: str, body: str, line: int) -> None:
    code = f"import os, subprocess, multiprocessing\ndef generate_signal(c, s):\n    {body}\n"
    result = hostile(code, any_mode)
    assert not result.ok
    assert result.error.startswith("exception: PermissionError: [Errno 1] Operation not permitted")
    assert f"(line {line})" in result.error


def test_shell_commands_do_not_run(any_mode: str, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    code = (
        f"import os\ndef generate_signal(c, s):\n    return {{'rc': os.system('touch {target}')}}\n"
    )
    result = hostile(code, any_mode)
    assert result.ok and result.value is not None and result.value["rc"] != 0  # fork refused
    assert not target.exists()


def test_threads_are_refused(mode: str) -> None:
    code = (
        "import threading\ndef generate_signal(c, s):\n    threading.Thread(target=print).start()\n"
    )
    result = hostile(code, mode)
    assert result.error.startswith("exception: RuntimeError: can't start new thread (line 3)")


@pytest.mark.parametrize("port", [6379, 5432])
def test_no_network(any_mode: str, port: int) -> None:
    code = f"""
    import socket
    def generate_signal(c, s):
        sock = socket.create_connection(("127.0.0.1", {port}), timeout=1)
        return {{"connected": True}}
    """
    result = hostile(code, any_mode)
    assert not result.ok
    # seccomp refuses socket() in every mode; under bwrap the network namespace is empty too.
    assert result.error.startswith("exception: PermissionError: [Errno 1] Operation not permitted")
    assert "(line 4)" in result.error


def test_cannot_reach_a_real_listener(mode: str) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    port = server.getsockname()[1]
    code = f"""
    import socket
    def generate_signal(c, s):
        socket.create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"leak")
    """
    try:
        result = hostile(code, mode)
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()
    assert not result.ok


def test_environment_has_no_secrets(any_mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_TEST_SECRET_KEY", "hunter2")
    monkeypatch.setenv("DATABASE_URL", "postgres://user:hunter2@db/x")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "config.settings.test")
    zygote_client.shutdown()  # the secret must not reach even a freshly started zygote
    code = """
    import os
    def generate_signal(c, s):
        try:
            raw = open("/proc/self/environ", "rb").read().decode(errors="replace")
        except OSError as exc:
            raw = repr(exc)
        return {"env": dict(os.environ), "raw": raw}
    """
    result = hostile(code, any_mode)
    assert result.ok, result.error
    assert result.value is not None
    env = result.value["env"]
    assert "hunter2" not in repr(result.value)
    assert "SANDBOX_TEST_SECRET_KEY" not in env
    assert "DATABASE_URL" not in env
    assert "DJANGO_SETTINGS_MODULE" not in env
    assert set(env) <= {
        "PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
        "MKL_NUM_THREADS", "NUMEXPR_MAX_THREADS", "LC_CTYPE",
    }  # fmt: skip


def _probe_files_code(paths: list[str]) -> str:
    return f"""
    def generate_signal(c, s):
        out = {{}}
        for path in {paths!r}:
            try:
                with open(path, "rb") as fh:
                    out[path] = "read %d bytes" % len(fh.read())
            except OSError as exc:
                out[path] = type(exc).__name__
        return out
    """


def test_cannot_read_project_settings_or_proc(any_mode: str) -> None:
    targets = [
        str(PROJECT_ROOT / "config" / "settings" / "base.py"),
        str(PROJECT_ROOT / "config" / "settings" / "production.py"),
        str(PROJECT_ROOT / "pyproject.toml"),
        str(Path(__file__).resolve()),
        "/proc/1/environ",
        f"/proc/{os.getpid()}/environ",
        f"/proc/{os.getpid()}/cmdline",
        "/proc/self/environ",
        "/etc/shadow",
        "/etc/passwd",
    ]
    if any_mode != "cold":
        targets.append(f"/proc/{_zygote_pid(any_mode)}/environ")
    result = hostile(_probe_files_code(targets), any_mode)
    assert result.ok, result.error
    assert result.value is not None
    _skip_fs_assertions_without_isolation(any_mode)
    assert all(not v.startswith("read") for v in result.value.values()), result.value


def test_cannot_see_the_project_directory(mode: str) -> None:
    if mode == "rlimit":
        pytest.skip("namespace-specific")
    # Every directory on the way to a mounted Python directory must hold nothing else.
    layout = isolation.sandbox_layout()
    parents = sorted(
        {str(p) for _, inside in layout.binds for p in Path(inside).parents if str(p) != "/"}
    )
    code = f"""
    import os
    def generate_signal(c, s):
        return {{"exists": os.path.exists({str(PROJECT_ROOT)!r}),
                "venv": os.path.exists({str(PROJECT_ROOT / ".venv")!r}),
                "root": sorted(os.listdir("/")),
                "parents": {{p: sorted(os.listdir(p)) for p in {parents!r}}},
                "ppid": os.getppid(), "pid": os.getpid(), "proc": os.listdir("/proc")}}
    """
    result = hostile(code, mode)
    assert result.ok, result.error
    value = result.value
    assert value is not None
    assert value["exists"] is False and value["venv"] is False
    # Own PID namespace, under a tiny init: the strategy is never PID 1 itself.
    assert value["pid"] == 2 and value["ppid"] == 1
    assert value["proc"] == []
    inside = [inside for _, inside in layout.binds]
    expected_top = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "tmp", "proc"}
    expected_top |= {"dev", "etc", "sandbox"} | {p.split("/")[1] for p in inside}
    assert set(value["root"]) <= expected_top, value["root"]
    for parent, names in value["parents"].items():
        wanted = {p[len(parent) + 1 :].split("/")[0] for p in inside if p.startswith(parent + "/")}
        assert set(names) <= wanted | set(isolation.SCRIPTS), (parent, names)


def test_cannot_write_outside_its_temp_dir(any_mode: str) -> None:
    targets = [
        "/tmp/escape",
        "/var/tmp/escape",
        "/etc/escape",
        "/escape",
        "/usr/escape",
        "/dev/escape",
        "/dev/shm/escape",
        "/sandbox/escape",
        "../escape",
        str(PROJECT_ROOT / "escape"),
        str(Path(tempfile.gettempdir()) / "escape"),
    ]
    if not _fs_isolated(any_mode):
        targets = []  # they would really be written: only the work dir is checked
    code = f"""
    import os, tempfile
    def generate_signal(c, s):
        out = {{}}
        for path in {targets!r}:
            try:
                with open(path, "w") as fh:
                    fh.write("x")
                out[path] = "written"
                os.unlink(path)
            except OSError as exc:
                out[path] = type(exc).__name__
        with open("own.txt", "w") as fh:
            fh.write("fine")
        os.mkdir("sub")
        with tempfile.NamedTemporaryFile(dir=None) as fh:
            out["tempdir"] = os.path.dirname(fh.name) == os.getcwd()
        out["own"] = open("own.txt").read()
        return out
    """
    result = hostile(code, any_mode)
    assert result.ok, result.error
    value = result.value
    assert value is not None
    assert value["own"] == "fine"
    assert value["tempdir"] is True
    _skip_fs_assertions_without_isolation(any_mode)
    assert all(value[p] != "written" for p in targets), value


def test_the_work_dir_is_the_only_writable_place(any_mode: str) -> None:
    # Tries to create a file in every directory it can list (two levels deep, plus a few
    # usual suspects): only its own work directory may accept it.
    code = """
    import os
    def generate_signal(c, s):
        dirs = ["/", "/tmp", "/var/tmp", "/dev/shm", "/run", "/run/lock", "/etc", "/usr", "/root"]
        dirs += [os.path.dirname(os.getcwd()), *s["extra"]]
        for top in list(dirs):
            try:
                dirs += [os.path.join(top, n) for n in os.listdir(top)]
            except OSError:
                pass
        writable = []
        for d in dict.fromkeys(dirs):
            if os.path.realpath(d) == os.getcwd() or not os.path.isdir(d) or os.path.islink(d):
                continue
            if d.startswith(("/proc", "/sys")):
                continue
            try:
                fd = os.open(os.path.join(d, ".sandbox-probe"), os.O_CREAT | os.O_WRONLY, 0o600)
            except OSError:
                continue
            os.close(fd)
            os.unlink(os.path.join(d, ".sandbox-probe"))
            writable.append(d)
        return {"writable": writable}
    """
    _skip_fs_assertions_without_isolation(any_mode)  # it would really write everywhere
    extra = [str(PROJECT_ROOT), str(PROJECT_ROOT / ".venv"), *isolation.landlock_read_paths()]
    result = hostile(code, any_mode, timeout_s=20, settings={"extra": extra})
    assert result.ok, result.error
    assert result.value == {"writable": []}


def test_big_file_write_is_refused(mode: str) -> None:
    code = "def generate_signal(c, s):\n    open('big', 'wb').write(b'x' * 2 * 1024 * 1024)\n"
    result = hostile(code, mode)
    assert result.error.startswith("exception: OSError: [Errno 27] File too large")


def test_executions_do_not_share_files_or_memory(mode: str) -> None:
    writer = """
    import os, pandas, time
    def generate_signal(c, s):
        open("secret.txt", "w").write("mine")
        pandas.LEAKED = "mine"
        os.environ["LEAKED"] = "mine"
        time.sleep(s.get("sleep", 0))
        return {"cwd": os.getcwd()}
    """
    reader = """
    import os, pandas
    def generate_signal(c, s):
        return {"files": os.listdir("."), "attr": getattr(pandas, "LEAKED", None),
                "env": os.environ.get("LEAKED")}
    """
    assert run(writer, isolation_mode=mode).ok
    after = run(reader, isolation_mode=mode)
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(run, writer, settings={"sleep": 1.0}, isolation_mode=mode)
        time.sleep(0.5)
        during = run(reader, isolation_mode=mode)
        assert slow.result().ok
    for result in (after, during):
        assert result.ok, result.error
        assert result.value == {"files": [], "attr": None, "env": None}


def test_print_flood_is_capped_and_fast(any_mode: str) -> None:
    code = "def generate_signal(c, s):\n    print('x' * (100 * 1024 * 1024))\n    return None\n"
    result = hostile(code, any_mode, timeout_s=10)
    assert result.ok, result.error
    assert len(result.logs) < 1024 * 1024 + 100
    assert result.logs.endswith(f"[... {100 * 1024 * 1024 + 1 - 1024 * 1024} bytes dropped]")
    assert result.duration_ms < (6000 if any_mode == "cold" else 3000)


def test_raw_fd_flood_is_capped(mode: str) -> None:
    code = (
        "import os\ndef generate_signal(c, s):\n"
        "    for _ in range(100):\n        os.write(1, b'y' * 1024 * 1024)\n"
        "        os.write(2, b'z' * 1024)\n    return {'a': 1}\n"
    )
    result = hostile(code, mode, timeout_s=10)
    assert result.ok, result.error
    assert result.value == {"a": 1}
    assert len(result.logs) < 1024 * 1024 + 100
    assert "bytes dropped]" in result.logs
    assert result.duration_ms < 5000


def test_fake_result_frames_are_just_logs(any_mode: str) -> None:
    code = """
    import os, sys
    FAKE = '{"ok": true, "value": {"signal": "LONG"}, "error": "", "dropped": 0}'
    def generate_signal(c, s):
        print("R" + FAKE)
        sys.stderr.write(FAKE)
        os.write(1, b"\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x10" + FAKE.encode())
        return {"signal": "HOLD"}
    """
    result = hostile(code, any_mode)
    assert result.ok, result.error
    assert result.value == {"signal": "HOLD"}
    assert '"LONG"' in result.logs


def test_garbage_on_the_result_channel_fails_the_execution(mode: str) -> None:
    # Writing to the result pipe itself, then returning normally: two documents, rejected.
    code = (
        "import os\ndef generate_signal(c, s):\n    os.write(3, b'{\"ok\": true}')\n    return {}\n"
    )
    result = hostile(code, mode)
    assert not result.ok
    assert result.error == "invalid result: malformed result frame"


def test_sys_exit_is_a_failure(any_mode: str) -> None:
    result = hostile("import sys\ndef generate_signal(c, s):\n    sys.exit(0)\n", any_mode)
    assert not result.ok
    assert result.error == "strategy called sys.exit(0)"


@pytest.mark.parametrize("code", [0, 3])
def test_os_exit_is_a_failure(any_mode: str, code: int) -> None:
    result = hostile(f"import os\ndef generate_signal(c, s):\n    os._exit({code})\n", any_mode)
    assert not result.ok
    assert result.error == f"process exited with code {code} before returning a result"


def test_self_kill_is_a_failure(mode: str) -> None:
    code = "import os\ndef generate_signal(c, s):\n    os.abort()\n"
    result = hostile(code, mode)
    assert not result.ok
    assert result.error == "process killed by signal SIGABRT before returning a result"


@pytest.mark.parametrize("target", ["os.getppid()", "1", "0", "-1", "TEST_PROCESS", "ZYGOTE"])
def test_killing_other_processes_fails_and_everyone_survives(any_mode: str, target: str) -> None:
    if target == "ZYGOTE" and any_mode == "cold":
        pytest.skip("no zygote in cold mode")
    if target == "ZYGOTE":
        target = str(_zygote_pid(any_mode))
    target = target.replace("TEST_PROCESS", str(os.getpid()))
    code = f"import os, signal\ndef generate_signal(c, s):\n    os.kill({target}, signal.SIGKILL)\n"
    result = hostile(code, any_mode)
    assert not result.ok
    assert result.error.startswith("exception: PermissionError"), result.error
    assert run(TRIVIAL, isolation_mode=any_mode).ok


# --------------------------------------------------------------------------- syscall filter
#
# Raw syscalls through ctypes, in the modes without namespaces, with Landlock switched off: only
# the seccomp filter stands between the strategy and another process of the same user.

# name: (x86_64, aarch64) numbers, independent of the product's table so a wrong one shows.
SYSCALL_NUMBERS = {
    "rt_sigqueueinfo": (129, 138),
    "rt_tgsigqueueinfo": (297, 240),
    "pidfd_send_signal": (424, 424),
    "pidfd_open": (434, 434),
    "kill": (62, 129),
    "tkill": (200, 130),
    "tgkill": (234, 131),
    "setpriority": (141, 140),
    "prlimit64": (302, 261),
    "fcntl": (72, 25),
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "mount": (165, 40),
    "unshare": (272, 97),
    "setns": (308, 268),
    "socket": (41, 198),
    "execve": (59, 221),
}
MACHINE_COLUMN = {"x86_64": 0, "aarch64": 1}.get(platform.machine())
SIGTERM, SI_QUEUE, PTRACE_ATTACH, F_SETOWN, RLIMIT_NOFILE = 15, -1, 16, 8, 7
# Arguments: TARGET is the other process's pid, PIDFD a /proc/<pid> directory fd (what
# pidfd_send_signal accepts), INFO a siginfo (SIGTERM, SI_QUEUE) or an rlimit {1, 1}.
DENIED_CALLS = [
    ("rt_sigqueueinfo", ["TARGET", SIGTERM, "INFO"]),
    ("rt_tgsigqueueinfo", ["TARGET", "TARGET", SIGTERM, "INFO"]),
    ("pidfd_send_signal", ["PIDFD", SIGTERM, None, 0]),
    ("pidfd_open", ["TARGET", 0]),
    ("kill", ["TARGET", SIGTERM]),
    ("tkill", ["TARGET", SIGTERM]),
    ("tgkill", ["TARGET", "TARGET", SIGTERM]),
    ("setpriority", [0, "TARGET", 19]),  # PRIO_PROCESS: renice the worker
    ("prlimit64", ["TARGET", RLIMIT_NOFILE, "INFO", None]),  # starve the worker of fds
    ("fcntl", [1, F_SETOWN, "TARGET"]),  # SIGIO to the worker on I/O
    ("ptrace", [PTRACE_ATTACH, "TARGET", None, None]),
    ("process_vm_readv", ["TARGET", None, 0, None, 0, 0]),
    ("mount", [None, "/tmp", "tmpfs", 0, None]),
    ("unshare", [0x10000000]),  # CLONE_NEWUSER
    ("setns", [0, 0]),
    ("socket", [2, 1, 0]),  # AF_INET, SOCK_STREAM
    ("execve", ["/bin/true", None, None]),
]
RAW_SYSCALL = """
import ctypes, os, struct

libc = ctypes.CDLL(None, use_errno=True)

def generate_signal(c, s):
    info = ctypes.create_string_buffer(128)
    struct.pack_into("iii", info, 0, 15, 0, -1)  # rt_sig*: SIGTERM, SI_QUEUE
    if s["name"] == "prlimit64":
        struct.pack_into("QQ", info, 0, 1, 1)
    args = []
    for arg in s["args"]:
        if arg == "TARGET":
            arg = s["target"]
        elif arg == "PIDFD":
            arg = os.open(f"/proc/{s['target']}", os.O_RDONLY | os.O_DIRECTORY)
        if arg == "INFO":
            args.append(info)
        elif isinstance(arg, int):
            args.append(ctypes.c_long(arg))
        else:
            args.append(arg.encode() if isinstance(arg, str) else arg)
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(s["nr"]), *args)
    return {"rc": rc, "errno": ctypes.get_errno()}
"""


@pytest.fixture
def without_landlock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Zygotes and cold children started without Landlock (as on a kernel older than 5.13),
    so that its signal scoping (ABI 6) does not hide what the filter lets through."""
    zygote_client.shutdown()
    monkeypatch.setattr(isolation, "landlock_read_paths", lambda: [])
    yield
    zygote_client.shutdown()


@pytest.fixture
def other_process() -> Iterator[subprocess.Popen[bytes]]:
    """A process of the same user that is none of the sandbox's: the worker's stand-in."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.skipif(MACHINE_COLUMN is None, reason="syscall numbers known for x86_64/aarch64")
@pytest.mark.parametrize(("name", "args"), DENIED_CALLS, ids=[name for name, _ in DENIED_CALLS])
@pytest.mark.parametrize("unisolated_mode", ["rlimit", "cold"])
def test_the_syscall_filter_alone_refuses_reaching_other_processes(
    without_landlock: None,
    other_process: subprocess.Popen[bytes],
    unisolated_mode: str,
    name: str,
    args: list,
) -> None:
    # given another process of the same user and a strategy making a raw syscall at it
    assert MACHINE_COLUMN is not None
    nice = os.getpriority(os.PRIO_PROCESS, other_process.pid)
    limits = resource.prlimit(other_process.pid, RLIMIT_NOFILE)
    settings = {
        "name": name,
        "nr": SYSCALL_NUMBERS[name][MACHINE_COLUMN],
        "args": args,
        "target": other_process.pid,
    }

    # when it runs with nothing but the seccomp filter between them
    result = hostile(RAW_SYSCALL, unisolated_mode, settings=settings)

    # then the call fails with EPERM, and the other process is untouched
    assert result.ok, result.error
    assert result.value == {"rc": -1, "errno": 1}, result.value
    assert other_process.poll() is None, "the other process was signalled"
    assert os.getpriority(os.PRIO_PROCESS, other_process.pid) == nice
    assert resource.prlimit(other_process.pid, RLIMIT_NOFILE) == limits


LIBRARIES = """
import bisect, calendar, collections, csv, dataclasses, datetime, decimal, enum, fractions
import functools, hashlib, heapq, io, itertools, json, logging, math, os, random, re, secrets
import statistics, string, struct, tempfile, textwrap, time, typing, uuid, zoneinfo
import numpy as np
import pandas as pd
import ta
from ta.trend import MACD, ADXIndicator
from ta.volatility import AverageTrueRange, BollingerBands
from ta.volume import OnBalanceVolumeIndicator

LOOKBACK = 200


def generate_signal(candles, settings):
    logging.basicConfig(level=logging.INFO)
    df = candles.set_index("timestamp")
    bars = df.resample("5min").agg({"open": "first", "high": "max", "low": "min",
                                    "close": "last", "volume": "sum"})
    by_hour = df.groupby(df.index.hour)["close"].mean()
    indicators = {
        "macd": MACD(df["close"]).macd_diff().iloc[-1],
        "bb": BollingerBands(df["close"]).bollinger_hband().iloc[-1],
        "atr": AverageTrueRange(df["high"], df["low"], df["close"]).average_true_range().iloc[-1],
        "adx": ADXIndicator(df["high"], df["low"], df["close"]).adx().iloc[-1],
        "obv": OnBalanceVolumeIndicator(df["close"], df["volume"]).on_balance_volume().iloc[-1],
        "rsi": ta.momentum.RSIIndicator(df["close"]).rsi().iloc[-1],
    }
    buffer = io.StringIO()
    df.tail(5).to_csv(buffer)
    back = pd.read_csv(io.StringIO(buffer.getvalue()))
    local = df.index.tz_convert("America/New_York")[-1]
    paris = datetime.datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    with tempfile.NamedTemporaryFile("w", delete=False) as fh:
        fh.write("x" * 1000)
    with open(fh.name) as fh2:
        size = len(fh2.read())
    os.makedirs("sub/dir", exist_ok=True)
    listed = sorted(os.listdir("."))
    os.remove(fh.name)
    time.sleep(0.01)
    rng = np.random.default_rng(1)
    inverse = np.linalg.inv(np.eye(3) * 2)[0, 0]
    spectrum = abs(np.fft.fft(np.arange(8))[1])
    logging.getLogger("strategy").info("bars=%d", len(bars))
    print(df.describe().to_string()[:20], os.getcwd() != "", os.cpu_count())
    return {
        "signal": "HOLD",
        "metadata": {
            **indicators,
            "hours": len(by_hour), "csv_rows": len(back), "local": local.isoformat(),
            "paris": paris.utcoffset().total_seconds(), "size": size, "listed": listed,
            "inverse": inverse, "spectrum": spectrum, "normal": rng.normal(size=10).std() > 0,
            "median": statistics.median([1, 2, 3]), "decimal": str(decimal.Decimal("1.1") * 3),
            "sha": hashlib.sha256(b"x").hexdigest()[:8], "token": len(secrets.token_hex(4)),
            "uuid": len(str(uuid.uuid4())), "random": 0 <= random.random() < 1,
            "fraction": str(fractions.Fraction(1, 3)), "json": json.dumps({"a": 1}),
        },
    }
"""


def test_the_syscall_filter_lets_the_standard_library_numpy_pandas_and_ta_work(
    any_mode: str,
) -> None:
    # given a strategy using the libraries and a wide part of the standard library, imported
    # and first used after the filter is in place
    # when it runs
    result = hostile(LIBRARIES, any_mode, timeout_s=20)

    # then everything worked
    assert result.ok, result.error
    assert result.value is not None
    metadata = result.value["metadata"]
    assert "sub" in metadata["listed"] and len(metadata["listed"]) == 2  # and the temp file
    assert metadata["size"] == 1000 and metadata["csv_rows"] == 5 and metadata["hours"] > 0
    assert metadata["paris"] == 3600.0 and metadata["local"].endswith("-05:00")
    assert metadata["inverse"] == 0.5 and metadata["normal"] is True
    assert "INFO:strategy:bars=" in result.logs


def test_exception_traceback_has_only_strategy_frames(any_mode: str) -> None:
    code = "import pandas as pd\n\ndef generate_signal(c, s):\n    return pd.Series([1]).loc[5]\n"
    result = hostile(code, any_mode)
    assert result.error.startswith("exception: KeyError: 5 (line 4)")
    assert 'File "<strategy>", line 4, in generate_signal' in result.error
    assert "pandas" not in result.error.split("\n", 1)[1]
    assert "zygote" not in result.error and "child.py" not in result.error


def test_nan_result(any_mode: str) -> None:
    code = "import numpy as np\ndef generate_signal(c, s):\n    return {'price': np.nan}\n"
    result = hostile(code, any_mode)
    assert result.error == "invalid result: non-finite number"


def test_oversized_result(mode: str) -> None:
    code = "def generate_signal(c, s):\n    return {'x': 'y' * (2 * 1024 * 1024)}\n"
    result = hostile(code, mode)
    assert result.error.startswith("invalid result: larger than")


# --------------------------------------------------------------------------- storable output
#
# Whatever a strategy produces must be storable as it is recorded (PostgreSQL text refuses
# NUL, JSON refuses lone surrogates and non-finite numbers): unstorable characters become
# U+FFFD at the sandbox boundary, and frames that cannot be made storable fail the execution.


def test_nul_and_lone_surrogates_in_logs_and_result_are_replaced(any_mode: str) -> None:
    # given a strategy printing a NUL and returning NULs and lone surrogates, keys included
    code = """
    def generate_signal(c, s):
        print("before\\x00after")
        return {"signal": "HOLD", "note\\x00": "\\ud800",
                "metadata": {"k\\x00": ["\\udfff", {"\\udc80": "x\\x00y"}]}}
    """

    # when it runs
    result = hostile(code, any_mode)

    # then every string of it is storable, with U+FFFD where a character was not
    assert result.ok, result.error
    assert result.logs == "before\ufffdafter\n"
    assert result.value == {
        "signal": "HOLD",
        "note\ufffd": "\ufffd",
        "metadata": {"k\ufffd": ["\ufffd", {"\ufffd": "x\ufffdy"}]},
    }


def test_nul_and_lone_surrogates_in_an_exception_keep_the_strategy_error(any_mode: str) -> None:
    # given a strategy raising an exception whose text holds a NUL and a lone surrogate
    code = "def generate_signal(c, s):\n    raise ValueError('nul\\x00 and \\udc80')\n"

    # when it runs
    result = hostile(code, any_mode)

    # then its own error is reported, made storable
    assert not result.ok
    assert result.error.startswith("exception: ValueError: nul\ufffd and \ufffd (line 2)")
    assert "\x00" not in result.error


DEEP = "[" * 10_000 + "]" * 10_000


def _forging(frame: str) -> str:
    """A strategy writing ``frame`` itself on the result pipe (fd 3), then exiting."""
    body = f"os.write(3, {frame.encode()!r})\n    os._exit(0)"
    return f"import os\ndef generate_signal(c, s):\n    {body}\n"


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ('{"ok": true, "value": {"x": 1e999}}', "invalid result: non-finite number"),
        ('{"ok": true, "value": {"x": -1E400}}', "invalid result: non-finite number"),
        ('{"ok": true, "value": {"x": ' + DEEP + "}}", "invalid result: nested too deeply"),
        (
            '{"ok": true, "value": {"x": ' + "[" * 70 + "]" * 70 + "}}",
            "invalid result: nested too deeply",
        ),
        ('{"ok": false, "error": "nul \\u0000 \\ud800"}', "nul \ufffd \ufffd"),
    ],
    ids=["overflow", "negative-overflow", "deep", "deeper-than-limit", "error-text"],
)
def test_forged_result_frames_are_made_storable_or_refused(
    mode: str, frame: str, error: str
) -> None:
    # given a strategy that writes its own result frame on the result pipe and exits
    code = _forging(frame)

    # when it runs
    result = hostile(code, mode)

    # then nothing unstorable comes back
    assert not result.ok
    assert result.value is None
    assert result.error == error


def test_a_forged_huge_error_is_cut(mode: str) -> None:
    frame = '{"ok": false, "error": "' + "e" * 500_000 + '"}'
    code = _forging(frame)

    result = hostile(code, mode)

    assert not result.ok
    assert result.error.startswith("eeee")
    assert len(result.error) <= 8192


def test_concurrent_runs_complete_while_a_hostile_one_times_out(mode: str) -> None:
    with ThreadPoolExecutor(6) as pool:
        hostile_run = pool.submit(run, LOOP, timeout_s=3, isolation_mode=mode)
        time.sleep(0.2)
        started = time.monotonic()
        friendly = [pool.submit(run, TRIVIAL, isolation_mode=mode) for _ in range(10)]
        results = [f.result() for f in friendly]
        friendly_s = time.monotonic() - started
        assert not hostile_run.done()
        assert hostile_run.result().error == "timeout after 3.0 s"
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert friendly_s < 2.5


# --------------------------------------------------------------------------- zygote lifecycle


def test_zygote_is_restarted_after_it_dies(mode: str) -> None:
    zygote = zygote_client.get_zygote(mode)
    os.killpg(zygote.proc.pid, signal.SIGKILL)
    zygote.proc.wait(5)
    result = run(TRIVIAL, isolation_mode=mode)
    assert result.ok, result.error
    assert zygote_client.get_zygote(mode) is not zygote


def test_zygote_killed_during_an_execution_fails_only_that_one(mode: str) -> None:
    zygote = zygote_client.get_zygote(mode)
    processes = _descendants(os.getpid())
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run, LOOP, timeout_s=5, isolation_mode=mode)
        time.sleep(0.5)
        os.killpg(zygote.proc.pid, signal.SIGKILL)
        result = running.result()
    assert not result.ok
    assert result.error == "sandbox process died during the execution"
    assert result.duration_ms < 3000  # the executor went with the zygote, no timeout needed
    assert _eventually(lambda: _descendants(os.getpid()) < processes)
    assert run(TRIVIAL, isolation_mode=mode).ok
    # A killed rlimit supervisor cannot remove its work dir; once it is gone, the next zygote
    # to start sweeps the dir (named after it).
    owners = [Path(p).name.split("-")[2] for p in _leftover_work_files()]
    assert _eventually(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in owners))
    zygote_client.shutdown()
    assert run(TRIVIAL, isolation_mode=mode).ok
    assert not _leftover_work_files()


def test_forked_worker_gets_its_own_zygote(mode: str) -> None:
    parent_zygote = zygote_client.get_zygote(mode)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        try:
            result = run(TRIVIAL, isolation_mode=mode)
            own = zygote_client.get_zygote(mode).proc.pid != parent_zygote.proc.pid
            os.write(write_end, b"ok" if result.ok and own else result.error.encode()[:200])
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 1024)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert answer == b"ok"
    assert parent_zygote.alive()
    assert run(TRIVIAL, isolation_mode=mode).ok


def test_zygote_does_not_outlive_a_short_lived_starter_thread(mode: str) -> None:
    zygote_client.shutdown()
    thread = threading.Thread(target=run, args=(TRIVIAL,), kwargs={"isolation_mode": mode})
    thread.start()
    thread.join()
    zygote = zygote_client.get_zygote(mode)
    time.sleep(0.3)
    assert zygote.alive()  # spawned from the keeper thread, not the dead caller thread


def test_zygote_dies_with_the_process_that_started_it(mode: str) -> None:
    # A worker process killed with SIGKILL (no cleanup at all) must not leave sandboxes.
    # An execution is in flight (a sleeping strategy: no CPU limit would ever stop it).
    script = textwrap.dedent(f"""
        import json, os, signal, threading, time
        from strategies.sandbox import run_strategy, zygote_client
        from tests.strategies.test_sandbox import TRIVIAL, CANDLES, _descendants
        assert run_strategy(code=TRIVIAL, candles=CANDLES, settings={{}},
                            isolation_mode={mode!r}).ok
        sleeper = "import time\\ndef generate_signal(c, s):\\n    time.sleep(3600)\\n"
        threading.Thread(target=run_strategy, daemon=True, kwargs=dict(
            code=sleeper, candles=CANDLES, settings={{}}, timeout_s=600,
            isolation_mode={mode!r})).start()
        time.sleep(1)
        print(json.dumps(sorted(_descendants(os.getpid()))), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_CANARY_SECRET"}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env, capture_output=True, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    sandbox_pids = [int(p) for p in proc.stdout.decode().strip("[]\n").split(",")]
    assert len(sandbox_pids) >= 3  # zygote, supervisor, executor at least
    assert _eventually(lambda: not any(os.path.exists(f"/proc/{p}") for p in sandbox_pids))


def test_shutdown_stops_the_zygote_and_removes_its_files(mode: str) -> None:
    zygote = zygote_client.get_zygote(mode)
    processes = _descendants(zygote.proc.pid) | {zygote.proc.pid}
    zygote_client.shutdown()
    assert zygote.proc.poll() is not None
    assert _eventually(lambda: not any(os.path.exists(f"/proc/{p}") for p in processes))
    assert not _leftover_work_files()


# --------------------------------------------------------------------------- isolation policy


def test_require_isolation_refuses_without_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "bwrap_status", lambda: (False, "bwrap is not installed"))
    result = run(TRIVIAL, require_isolation=True)
    assert not result.ok
    assert result.error == "isolation required but bubblewrap is not usable: bwrap is not installed"
    monkeypatch.setenv("STRATEGY_SANDBOX_REQUIRE_ISOLATION", "1")
    assert run(TRIVIAL).error.startswith("isolation required")
    # Forcing the rlimit level does not get around the requirement either.
    assert run(TRIVIAL, isolation_mode="rlimit").error.startswith("isolation required")


def test_falls_back_to_rlimit_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(isolation, "bwrap_status", lambda: (False, "bwrap is not installed"))
    monkeypatch.setattr(isolation, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="strategies.sandbox"):
        first, second = run(TRIVIAL), run(TRIVIAL)
    assert first.ok and second.ok
    assert first.isolation == "rlimit"
    warnings = [r for r in caplog.records if r.name == "strategies.sandbox"]
    assert len(warnings) == 1
    assert "bubblewrap unavailable" in warnings[0].getMessage()


def _failing_zygote(failing_mode: str):  # type: ignore[no-untyped-def]
    real = zygote_client.get_zygote

    def get_zygote(mode: str) -> zygote_client.Zygote:
        if mode == failing_mode:
            raise zygote_client.ZygoteError("sandbox did not start (exit code 1)")
        return real(mode)

    return get_zygote


@pytest.mark.skipif(not BWRAP_USABLE, reason="bwrap unusable")
def test_bwrap_that_cannot_start_falls_back_to_rlimit_or_refuses(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(isolation, "_warned", False)
    monkeypatch.setattr(isolation, "_probe_result", None)  # restored: probed again afterwards
    monkeypatch.setattr("strategies.sandbox.runner.get_zygote", _failing_zygote("bwrap"))
    refused = run(TRIVIAL, require_isolation=True)
    assert refused.error == (
        "isolation required but bubblewrap is not usable: sandbox did not start (exit code 1)"
    )
    monkeypatch.setattr(isolation, "_probe_result", None)
    with caplog.at_level(logging.WARNING, logger="strategies.sandbox"):
        result = run(TRIVIAL)
    assert result.ok and result.isolation == "rlimit"
    assert "bubblewrap unavailable" in caplog.text
    assert isolation.bwrap_status() == (False, "sandbox did not start (exit code 1)")


def test_rlimit_zygote_that_cannot_start_falls_back_to_cold_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("strategies.sandbox.runner.get_zygote", _failing_zygote("rlimit"))
    result = run(TRIVIAL, isolation_mode="rlimit")
    assert result.ok, result.error
    assert result.isolation == "rlimit"
    assert hostile(LOOP, "rlimit", timeout_s=1).error == "timeout after 1.0 s"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"isolation_mode": "chroot"}, "invalid isolation mode 'chroot'"),
        ({"timeout_s": 0}, "invalid timeout: 0"),
        ({"timeout_s": 10_000}, "invalid timeout: 10000"),
    ],
)
def test_invalid_options_are_refused(kwargs: dict, error: str) -> None:
    result = run(TRIVIAL, **kwargs)
    assert not result.ok and result.error.startswith(error)


@pytest.mark.skipif(not BWRAP_USABLE, reason="bwrap unusable")
def test_auto_mode_uses_bwrap_when_usable() -> None:
    assert run(TRIVIAL).isolation == "bwrap"


def test_package_imports_without_django() -> None:
    code = "import strategies.sandbox, sys; assert 'django' not in sys.modules"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, check=True)
