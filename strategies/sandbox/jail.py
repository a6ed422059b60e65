"""Linux confinement primitives for the sandbox child (stdlib + ctypes only, no project imports:
this file is bind-mounted alone into the bubblewrap sandbox).

* namespaces: per-execution user + PID + mount + IPC namespaces, a private tmpfs work dir and an
  empty /proc, so an execution cannot see other executions' processes or files;
* capabilities: everything dropped before the strategy runs;
* seccomp: no fork/clone/threads, no sockets, no signals to other processes, no ptrace-like or
  mount-like syscalls. This is what stops fork bombs and kill(getppid()) even for uid 0, where
  RLIMIT_NPROC does not apply;
* Landlock (Linux >= 5.13, unprivileged): without bubblewrap there is no mount namespace, so the
  file system is restricted this way instead: read-only access to the Python installation and
  system libraries, read-write access to the execution's own work dir, nothing else (no
  project, no /proc, no /home, no writes outside the work dir).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
SECCOMP_MODE_FILTER = 2
_CAP_VERSION_3 = 0x20080522
_CAP_LAST_CAP_GUESS = 63

# seccomp return values
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000

# Denied syscalls (-> EPERM) per architecture. clone3 gets ENOSYS so libc falls back to clone.
_SYSCALLS = {
    "x86_64": {
        "audit_arch": 0xC000003E,
        # fork vfork clone socket socketpair ptrace pivot_root chroot mount umount2 add_key
        # request_key keyctl unshare perf_event_open setns process_vm_readv/writev bpf
        # userfaultfd pidfd_send_signal io_uring_setup open_tree move_mount fsopen fsmount
        # fspick pidfd_open pidfd_getfd mount_setattr
        "deny": [
            57,
            58,
            56,
            41,
            53,
            101,
            155,
            161,
            165,
            166,
            248,
            249,
            250,
            272,
            298,
            308,
            310,
            311,
            321,
            323,
            424,
            425,
            428,
            429,
            430,
            432,
            433,
            434,
            438,
            442,
        ],
        "enosys": [435],
        "kill": 62,
        "tkill": 200,
        "tgkill": 234,
        "x32_bit": 0x40000000,
    },
    "aarch64": {
        "audit_arch": 0xC00000B7,
        # same list (no fork/vfork on arm64)
        "deny": [
            220,
            198,
            199,
            117,
            41,
            51,
            40,
            39,
            217,
            218,
            219,
            97,
            241,
            268,
            270,
            271,
            280,
            282,
            424,
            425,
            428,
            429,
            430,
            432,
            433,
            434,
            438,
            442,
        ],
        "enosys": [435],
        "kill": 129,
        "tkill": 130,
        "tgkill": 131,
        "x32_bit": 0,
    },
}


class JailError(OSError):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise JailError(err, f"{what}: {os.strerror(err)}")


def set_parent_death_signal(sig: int) -> None:
    _check(_libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PDEATHSIG)")


def confine(*, workdir: str, read_paths: list[str]) -> None:
    """Last step before strategy code runs (after rlimits): drop every capability, restrict
    the file system with Landlock when ``read_paths`` is given, then install seccomp."""
    drop_capabilities()
    if read_paths:
        restrict_filesystem(read=read_paths, write=[workdir])
    if seccomp_supported():
        install_seccomp(os.getpid())


# --------------------------------------------------------------------------- namespaces


def enter_private_namespaces() -> None:
    """New user/PID/mount/IPC namespaces for this process (the PID namespace applies to the
    next child, which becomes its PID 1: killing it kills everything it spawned)."""
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC
    _check(_libc.unshare(flags), "unshare")
    # Map our own ids only (the one mapping an unprivileged process may write).
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)


def mount_private_dirs(workdir: str, size_mb: int) -> None:
    """A fresh, size-capped tmpfs as the work dir, and an empty read-only /proc (hides every
    process, including other executions and the zygote)."""
    options = f"size={size_mb}m,nr_inodes=4096,mode=0700"
    _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, options)
    _mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None):
    args = [None if v is None else v.encode() for v in (source, target, fstype)]
    raw = None if data is None else data.encode()
    _check(_libc.mount(args[0], args[1], args[2], ctypes.c_ulong(flags), raw), f"mount {target}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


# --------------------------------------------------------------------------- capabilities


def drop_capabilities() -> None:
    """Drop the bounding set and all capabilities (effective, permitted, inheritable), then set
    no_new_privs so nothing can be regained through execve."""
    for cap in range(_CAP_LAST_CAP_GUESS + 1):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            if err == errno.EINVAL:  # past the last capability of this kernel
                break
            if err != errno.EPERM:  # EPERM: no CAP_SETPCAP; capset below still clears sets
                raise JailError(err, f"PR_CAPBSET_DROP: {os.strerror(err)}")
    header = struct.pack("=Ii", _CAP_VERSION_3, 0)
    data = bytes(24)  # two zeroed __user_cap_data_struct
    _check(_libc.capset(header, data), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")


# --------------------------------------------------------------------------- landlock

_SYS_LANDLOCK_CREATE_RULESET = 444  # same numbers on x86_64 and aarch64
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
# Access rights and the ABI version that introduced them.
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_ABI1 = (1 << 13) - 1  # execute .. make_sym
_FS_BY_ABI = {1: _FS_ABI1, 2: _FS_ABI1 | 1 << 13, 3: _FS_ABI1 | 3 << 13}  # + refer, truncate
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
_FILE_READ = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
_O_PATH = 0o10000000


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when unsupported or disabled."""
    result = _libc.syscall(
        _SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), _LANDLOCK_CREATE_RULESET_VERSION
    )
    return max(int(result), 0)


def restrict_filesystem(*, read: list[str], write: list[str]) -> int:
    """Allow reading (and executing) files beneath ``read``, everything beneath ``write``,
    nothing else; also no TCP and no signals or abstract sockets outside the domain where the
    kernel supports it. Returns the ABI used (0: Landlock unavailable, nothing done)."""
    abi = landlock_abi()
    if abi < 1:
        return 0
    fs_all = _FS_BY_ABI.get(abi, _FS_BY_ABI[3] | (_FS_IOCTL_DEV if abi >= 5 else 0))
    attr = struct.pack(
        "=QQQ",
        fs_all,
        _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
        _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0,
    )
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, attr, ctypes.c_size_t(size), 0)
    if ruleset < 0:
        err = ctypes.get_errno()
        raise JailError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    try:
        for paths, access in ((read, _FILE_READ), (write, fs_all)):
            for path in paths:
                _landlock_allow(ruleset, path, access & fs_all)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        _check(_libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def _landlock_allow(ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, _O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a missing optional path (e.g. /lib64 on arm64) is simply not granted
    try:
        if not os.path.isdir(path):
            # Directory-only rights cannot be granted on a file.
            access &= _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | 1 << 14 | _FS_IOCTL_DEV
        rule = struct.pack("=Qi", access, fd)
        _check(
            _libc.syscall(_SYS_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH, rule, 0),
            f"landlock_add_rule {path}",
        )
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- seccomp


def seccomp_supported() -> bool:
    return platform.machine() in _SYSCALLS


def install_seccomp(own_pid: int) -> None:
    """Deny process creation, sockets, foreign signals and namespace/mount/ptrace syscalls.
    ``own_pid`` is the pid this process sees for itself: kill/tgkill are allowed only on it."""
    table = _SYSCALLS[platform.machine()]
    program = _build_filter(table, own_pid)

    class SockFprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_char_p))

    raw = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    prog = SockFprog(len(program), raw)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "seccomp")


# BPF opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06


def _build_filter(table: dict, own_pid: int) -> list[tuple[int, int, int, int]]:
    deny = _RET_ERRNO | errno.EPERM
    prog: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (_JEQ_K, 1, 0, table["audit_arch"]),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if table["x32_bit"]:
        prog += [(_JGE_K, 0, 1, table["x32_bit"]), (_RET_K, 0, 0, deny)]
    for nr in table["deny"]:
        prog += [(_JEQ_K, 0, 1, nr), (_RET_K, 0, 0, deny)]
    for nr in table["enosys"]:
        prog += [(_JEQ_K, 0, 1, nr), (_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS)]
    # kill(pid, sig), tkill(tid, sig), tgkill(tgid, tid, sig): allowed only when the first
    # argument (low 32 bits of args[0], offset 16) is our own pid.
    for name in ("kill", "tkill", "tgkill"):
        prog += [
            (_JEQ_K, 0, 4, table[name]),
            (_LD_W_ABS, 0, 0, 16),
            (_JEQ_K, 0, 1, own_pid),
            (_RET_K, 0, 0, _RET_ALLOW),
            (_RET_K, 0, 0, deny),
        ]
    prog.append((_RET_K, 0, 0, _RET_ALLOW))
    return prog
