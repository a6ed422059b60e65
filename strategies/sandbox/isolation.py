"""Detect bubblewrap and build the zygote's command line (parent side, no Django)."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path

from .protocol import SANDBOX_DIR, child_sys_path

logger = logging.getLogger("strategies.sandbox")

# Where things live inside the bubblewrap sandbox.
SCRIPTS_DIR = "/sandbox"
WORKDIR = "/tmp/run"
SCRIPTS = ("zygote.py", "child.py", "jail.py")
# Where Python directories found inside the project checkout (a .venv) are mounted instead.
RELOCATED_DIR = "/sandbox/python"
# The sandbox's uid inside its user namespace. Must not be 0: since Linux 5.12 mapping uid 0
# into a nested user namespace needs CAP_SETFCAP, and the zygote creates one per execution.
SANDBOX_UID = 1000
# The project checkout (…/strategies/sandbox -> project root): never visible in the sandbox.
PROJECT_ROOT = SANDBOX_DIR.parent.parent

_probe_lock = threading.Lock()
_probe_result: tuple[bool, str] | None = None
_warned = False


def bwrap_path() -> str | None:
    return shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")


def bwrap_status() -> tuple[bool, str]:
    """(usable, reason). Runs ``bwrap --ro-bind / / true`` once per process and caches it."""
    global _probe_result
    with _probe_lock:
        if _probe_result is None:
            _probe_result = _probe_bwrap()
        return _probe_result


def mark_bwrap_unusable(reason: str) -> None:
    """Called when the bwrap zygote itself fails to start (e.g. nested namespaces refused)."""
    global _probe_result
    with _probe_lock:
        _probe_result = (False, reason)


def _probe_bwrap() -> tuple[bool, str]:
    path = bwrap_path()
    if path is None:
        return False, "bwrap is not installed"
    try:
        proc = subprocess.run(
            [path, "--unshare-all", "--ro-bind", "/", "/", "true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"bwrap failed: {exc}"
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip()[:300]
        return False, f"bwrap cannot create namespaces here: {detail}"
    return True, ""


def warn_once_unisolated(reason: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning(
            "strategy sandbox: bubblewrap unavailable (%s); strategies run with rlimits, "
            "seccomp and a clean environment only (no filesystem/network/PID isolation)",
            reason,
        )


def bwrap_command(ctrl_fd: int) -> list[str]:
    path = bwrap_path()
    assert path is not None
    layout = sandbox_layout()
    args = [
        path,
        "--unshare-all",
        "--unshare-user",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
    args += _filesystem_args(layout)
    interpreter = layout.to_sandbox(os.path.realpath(sys.executable))
    args += ["--chdir", WORKDIR, "--", interpreter, "-I", "-S", "-B"]
    args += [f"{SCRIPTS_DIR}/zygote.py", str(ctrl_fd)]
    return args


@dataclass(frozen=True)
class Layout:
    """Which host directories the sandbox sees, and where. Python directories that live inside
    the project (a ``.venv`` in the checkout) are mounted elsewhere, so that the project path
    does not exist at all in the sandbox; everything else keeps its path (the interpreter's
    RUNPATH and compiled extensions may hard-code it)."""

    binds: tuple[tuple[str, str], ...]  # (host path, sandbox path), read-only

    def to_sandbox(self, path: str) -> str:
        for host, inside in sorted(self.binds, key=lambda b: -len(b[0])):
            if _is_under(path, host):
                return inside + path[len(host) :]
        return path


def sandbox_layout() -> Layout:
    binds = []
    for index, root in enumerate(python_roots()):
        inside = f"{RELOCATED_DIR}/{index}" if _is_under(root, str(PROJECT_ROOT)) else root
        binds.append((root, inside))
    return Layout(tuple(binds))


def sandbox_sys_path() -> list[str]:
    """``sys.path`` for the interpreter inside bubblewrap."""
    layout = sandbox_layout()
    return [layout.to_sandbox(os.path.realpath(p)) for p in child_sys_path()]


def _filesystem_args(layout: Layout) -> list[str]:
    """Read-only system + Python, a read-only /tmp holding the per-execution mount point,
    the three sandbox scripts, and nothing else (no project, no settings, no /home).

    Everything ends read-only, including the root and /dev that bubblewrap creates as tmpfs:
    they are shared by every execution of the zygote, so a writable one would let an
    execution leave files for the next. The only writable place is the tmpfs the zygote mounts
    on WORKDIR in each execution's own mount namespace."""
    mounts: list[tuple[str, list[str]]] = [("/tmp", ["--perms", "0755", "--tmpfs", "/tmp"])]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr"):
        if os.path.islink(top):
            mounts.append((top, ["--symlink", os.readlink(top), top]))
        elif os.path.isdir(top):
            mounts.append((top, ["--ro-bind", top, top]))
    for host, inside in layout.binds:
        mounts.append((inside, ["--ro-bind", host, inside]))
    # Only directories bound from the host can show the project (the /tmp above is a fresh
    # tmpfs: a checkout under /tmp is not in it).
    host_bound = [inside for inside, mount_args in mounts if "--ro-bind" in mount_args]
    if any(_is_under(str(PROJECT_ROOT), inside) for inside in host_bound):
        # The project sits inside a bound directory (e.g. /usr/src/app): hide it behind an
        # empty read-only tmpfs.
        hidden = str(PROJECT_ROOT)
        mounts.append((hidden, ["--tmpfs", hidden, "--remount-ro", hidden]))
    # Parents before children, so nested binds land on top of their parents.
    mounts.sort(key=lambda item: item[0].count("/"))
    args = [arg for _, mount_args in mounts for arg in mount_args]
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives"):
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for script in SCRIPTS:
        args += ["--ro-bind", str(SANDBOX_DIR / script), f"{SCRIPTS_DIR}/{script}"]
    args += ["--dir", WORKDIR, "--remount-ro", "/tmp", "--remount-ro", "/dev"]
    return [*args, "--remount-ro", "/"]


def python_roots() -> list[str]:
    """Directories the interpreter needs: its base installation (stdlib, libpython) and the
    ``sys.path`` directories (site-packages), minimal (a path covered by another is dropped).
    A virtualenv's own prefix is not needed: the sandbox runs the base interpreter with an
    explicit ``sys.path``."""
    candidates = {
        os.path.realpath(p)
        for p in (
            sys.base_prefix,
            sys.base_exec_prefix,
            os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
            *child_sys_path(),
        )
        if p and os.path.exists(p)
    }
    candidates = {c for c in candidates if c not in {"/", str(PROJECT_ROOT)}}
    system = ("/usr", "/bin", "/lib", "/lib64")
    roots = sorted(c for c in candidates if not any(_is_under(c, s) for s in system))
    return [r for r in roots if not any(r != o and _is_under(r, o) for o in roots)]


# Read-only system paths a running strategy may need without bubblewrap (shared libraries
# loaded lazily by extension modules, time zones, the loader cache, /dev/null...). /etc as a
# whole, /proc, /home and the project are deliberately absent.
SYSTEM_READ_PATHS = (
    "/lib",
    "/lib32",
    "/lib64",
    "/usr/lib",
    "/usr/lib32",
    "/usr/lib64",
    "/usr/local/lib",
    "/usr/share/zoneinfo",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
)


@functools.cache
def landlock_read_paths() -> list[str]:
    """What a strategy may read without bubblewrap (Landlock): the Python installation, its
    ``sys.path`` and system libraries."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    wanted = [*python_roots(), *child_sys_path(), libdir, *SYSTEM_READ_PATHS]
    paths = []
    for path in wanted:
        real = os.path.realpath(path) if path else ""
        usable = real and real != "/" and os.path.exists(real) and real not in paths
        if usable and not _is_under(str(PROJECT_ROOT), real):  # never a parent of the project
            paths.append(real)
    return paths


def landlock_usable() -> bool:
    """Whether the rlimit mode can restrict the file system (Landlock in the kernel)."""
    from . import jail

    return jail.landlock_abi() >= 1


def _is_under(path: str, root: str) -> bool:
    return Path(path) == Path(root) or Path(root) in Path(path).parents
