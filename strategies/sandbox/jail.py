"""Linux confinement primitives for the sandbox child (stdlib + ctypes only, no project imports:
this file is bind-mounted alone into the bubblewrap sandbox).

* namespaces: per-execution user + PID + mount + IPC namespaces, a private tmpfs work dir and an
  empty /proc, so an execution cannot see other executions' processes or files;
* capabilities: everything dropped before the strategy runs;
* seccomp: an allow-list of what Python, numpy, pandas and ta need; so no fork/clone/threads,
  no exec, no sockets, no signals or other reach (prlimit, F_SETOWN, ptrace) to other
  processes, no mount-like or namespace syscalls. This is what stops fork bombs and
  kill(getppid()) even for uid 0, where RLIMIT_NPROC does not apply;
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
#
# An allow-list: what CPython, numpy, pandas and ta need once they are imported (file I/O on
# the descriptors and paths the other layers permit, memory, time, signals to itself), and
# nothing else. A deny-list misses whatever it did not think of (rt_sigqueueinfo sent SIGTERM
# to other processes; prlimit64, fcntl(F_SETOWN) and execve were open too) and every syscall a
# newer kernel adds. Everything not allowed fails with EPERM rather than killing the process:
# the strategy gets a PermissionError it can report (or survive), as tests and authors expect,
# and a refused call has no effect either way. Only a foreign architecture's syscalls (i386
# through int 0x80) kill: their numbers mean other calls, so no answer is safe.

_ARCHES = {
    # audit arch, x32 ABI bit (x86_64 only), column in _NUMBERS
    "x86_64": (0xC000003E, 0x40000000, 0),
    "aarch64": (0xC00000B7, 0, 1),
}

# name: (x86_64, aarch64) numbers; None where the architecture has no such call (arm64 only
# has the *at variants). From the kernel's asm/unistd_64.h and asm-generic/unistd.h.
_NUMBERS: dict[str, tuple[int | None, int | None]] = {
    # descriptors and files (the paths reachable are Landlock's / the mount namespace's)
    "read": (0, 63),
    "write": (1, 64),
    "readv": (19, 65),
    "writev": (20, 66),
    "pread64": (17, 67),
    "pwrite64": (18, 68),
    "preadv": (295, 69),
    "pwritev": (296, 70),
    "lseek": (8, 62),
    "close": (3, 57),
    "close_range": (436, 436),
    "dup": (32, 23),
    "dup2": (33, None),
    "dup3": (292, 24),
    "flock": (73, 32),
    "fsync": (74, 82),
    "fdatasync": (75, 83),
    "ftruncate": (77, 46),
    "truncate": (76, 45),
    "fallocate": (285, 47),
    "fadvise64": (221, 223),
    "sendfile": (40, 71),
    "copy_file_range": (326, 285),
    "open": (2, None),
    "openat": (257, 56),
    "creat": (85, None),
    "stat": (4, None),
    "fstat": (5, 80),
    "lstat": (6, None),
    "newfstatat": (262, 79),
    "statx": (332, 291),
    "statfs": (137, 43),
    "fstatfs": (138, 44),
    "access": (21, None),
    "faccessat": (269, 48),
    "faccessat2": (439, 439),
    "readlink": (89, None),
    "readlinkat": (267, 78),
    "getdents64": (217, 61),
    "getcwd": (79, 17),
    "chdir": (80, 49),
    "fchdir": (81, 50),
    "mkdir": (83, None),
    "mkdirat": (258, 34),
    "rmdir": (84, None),
    "unlink": (87, None),
    "unlinkat": (263, 35),
    "rename": (82, None),
    "renameat": (264, 38),
    "renameat2": (316, 276),
    "link": (86, None),
    "linkat": (265, 37),
    "symlink": (88, None),
    "symlinkat": (266, 36),
    "chmod": (90, None),
    "fchmod": (91, 52),
    "fchmodat": (268, 53),
    "utimensat": (280, 88),
    "umask": (95, 166),
    "pipe": (22, None),
    "pipe2": (293, 59),
    "poll": (7, None),
    "ppoll": (271, 73),
    "select": (23, None),
    "pselect6": (270, 72),
    "epoll_create1": (291, 20),
    "epoll_ctl": (233, 21),
    "epoll_wait": (232, None),
    "epoll_pwait": (281, 22),
    # memory (mbind/get_mempolicy: numpy's allocator on NUMA-aware builds)
    "brk": (12, 214),
    "mmap": (9, 222),
    "munmap": (11, 215),
    "mremap": (25, 216),
    "mprotect": (10, 226),
    "madvise": (28, 233),
    "msync": (26, 227),
    "mbind": (237, 235),
    "get_mempolicy": (239, 236),
    # about itself (getrlimit/setrlimit can only lower its own limits, capabilities dropped)
    "getpid": (39, 172),
    "getppid": (110, 173),
    "gettid": (186, 178),
    "getuid": (102, 174),
    "geteuid": (107, 175),
    "getgid": (104, 176),
    "getegid": (108, 177),
    "getgroups": (115, 158),
    "getresuid": (118, 148),
    "getresgid": (120, 150),
    "getpgrp": (111, None),
    "getpgid": (121, 155),
    "getsid": (124, 156),
    "uname": (63, 160),
    "sysinfo": (99, 179),
    "getrusage": (98, 165),
    "times": (100, 153),
    "getpriority": (140, 141),
    "sched_getaffinity": (204, 123),
    "sched_yield": (24, 124),
    "getrlimit": (97, 163),
    "setrlimit": (160, 164),
    "getrandom": (318, 278),
    # time
    "clock_gettime": (228, 113),
    "clock_getres": (229, 114),
    "gettimeofday": (96, 169),
    "time": (201, None),
    "clock_nanosleep": (230, 115),
    "nanosleep": (35, 101),
    "alarm": (37, None),
    "getitimer": (36, 102),
    "setitimer": (38, 103),
    # its own signals
    "rt_sigaction": (13, 134),
    "rt_sigprocmask": (14, 135),
    "rt_sigreturn": (15, 139),
    "rt_sigpending": (127, 136),
    "rt_sigsuspend": (130, 133),
    "rt_sigtimedwait": (128, 137),
    "sigaltstack": (131, 132),
    "pause": (34, None),
    "restart_syscall": (219, 128),
    # other
    "futex": (202, 98),
    "exit": (60, 93),
    "exit_group": (231, 94),
    # allowed for some arguments only (_ARGUMENT_RULES)
    "kill": (62, 129),
    "tkill": (200, 130),
    "tgkill": (234, 131),
    "prlimit64": (302, 261),
    "fcntl": (72, 25),
    "ioctl": (16, 29),
    # ENOSYS, so that glibc falls back to clone (refused with EPERM like fork and threads)
    "clone3": (435, 435),
}
_OWN_PID = None  # in _ARGUMENT_RULES: the pid the process sees for itself
# name: (argument index, values allowed); compared on the argument's low 32 bits, which is
# all the kernel reads of these int arguments.
_ARGUMENT_RULES: dict[str, tuple[int, tuple[int | None, ...]]] = {
    # Signals to itself only: raise()/abort() use tgkill(own tgid, own tid), os.kill(getpid())
    # kill. tgkill's tid must belong to that tgid, and the process has a single thread.
    "kill": (0, (_OWN_PID,)),
    "tkill": (0, (_OWN_PID,)),
    "tgkill": (0, (_OWN_PID,)),
    # resource.setrlimit/getrlimit (pid 0) and resource.prlimit on itself, never another's.
    "prlimit64": (0, (0, _OWN_PID)),
    # F_DUPFD F_GETFD F_SETFD F_GETFL F_SETFL F_GETLK F_SETLK F_SETLKW, F_OFD_GETLK/SETLK/
    # SETLKW, F_DUPFD_CLOEXEC; not F_SETOWN/F_SETSIG (SIGIO to another process) nor leases.
    "fcntl": (1, (0, 1, 2, 3, 4, 5, 6, 7, 36, 37, 38, 1030)),
    # TCGETS (isatty), TIOCGWINSZ, FIONREAD, FIONBIO, FIONCLEX, FIOCLEX (os.set_inheritable);
    # not terminal injection (TIOCSTI) or device ioctls.
    "ioctl": (1, (0x5401, 0x5413, 0x541B, 0x5421, 0x5450, 0x5451)),
}
_ENOSYS = ("clone3",)
_ALLOWED = tuple(name for name in _NUMBERS if name not in _ARGUMENT_RULES and name not in _ENOSYS)


def seccomp_supported() -> bool:
    return platform.machine() in _ARCHES


def install_seccomp(own_pid: int) -> None:
    """Allow only the syscalls above. ``own_pid`` is the pid this process sees for itself:
    signals may only go there."""
    program = _build_filter(platform.machine(), own_pid)

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
# offsetof(struct seccomp_data, ...)
_NR_OFFSET, _ARCH_OFFSET, _ARGS_OFFSET = 0, 4, 16


def _build_filter(machine: str, own_pid: int) -> list[tuple[int, int, int, int]]:
    audit_arch, x32_bit, column = _ARCHES[machine]
    deny = _RET_ERRNO | errno.EPERM
    numbers = {name: nr for name, nrs in _NUMBERS.items() if (nr := nrs[column]) is not None}
    prog: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, _ARCH_OFFSET),
        (_JEQ_K, 1, 0, audit_arch),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, _NR_OFFSET),
    ]
    if x32_bit:
        prog += [(_JGE_K, 0, 1, x32_bit), (_RET_K, 0, 0, deny)]
    for name in _ALLOWED:
        if name in numbers:
            prog += [(_JEQ_K, 0, 1, numbers[name]), (_RET_K, 0, 0, _RET_ALLOW)]
    for name in _ENOSYS:
        prog += [(_JEQ_K, 0, 1, numbers[name]), (_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS)]
    for name, (index, values) in _ARGUMENT_RULES.items():
        # Every block ends in a return, so the syscall number need not be reloaded after it.
        block = [(_LD_W_ABS, 0, 0, _ARGS_OFFSET + 8 * index)]
        for value in values:
            wanted = own_pid if value is _OWN_PID else value
            block += [(_JEQ_K, 0, 1, wanted), (_RET_K, 0, 0, _RET_ALLOW)]
        block.append((_RET_K, 0, 0, deny))
        prog += [(_JEQ_K, 0, len(block), numbers[name]), *block]
    prog.append((_RET_K, 0, 0, deny))
    return prog
