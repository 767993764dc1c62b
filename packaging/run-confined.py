"""Run a command under the seccomp confinement a systemd unit file asks for.

Usage: ``python3 packaging/run-confined.py UNIT_FILE COMMAND [ARG...]``

Where systemd is not PID 1 (a container, a build machine) this is how to learn, before a
device does, whether a program survives its unit. It loads the same kernel filters systemd
derives from these settings of ``UNIT_FILE``, then ``execve``s the command, which inherits them
(with ``no_new_privs`` set, as ``NoNewPrivileges=yes`` does):

- ``SystemCallFilter=`` lines, in order (the first an allow list, ``~`` lines removing, later
  lines adding back), groups expanded with ``systemd-analyze syscall-filter``; any other call
  fails with ``SystemCallErrorNumber=`` (EPERM by default here, as in our units);
- ``RestrictAddressFamilies=``: ``socket()`` of any other family fails;
- ``MemoryDenyWriteExecute=yes``: the rule systemd 252 (Debian 12) loads, refusing with EPERM an
  ``mmap`` both writable and executable, an ``mprotect``/``pkey_mprotect`` to executable, and
  ``shmat`` with ``SHM_EXEC``. Newer systemd on kernel 6.3+ uses ``prctl(PR_SET_MDWE)``, which
  refuses a subset of these, so passing here implies passing there.

User, capabilities and file-system settings are not emulated. Needs libseccomp (a dependency of
systemd) and systemd-analyze; x86_64 and aarch64.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import socket
import struct
import subprocess
import sys
from pathlib import Path

# Classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6];}.
_LD_W_ABS, _JEQ_K, _AND_K, _RET_K = 0x20, 0x15, 0x54, 0x06
_NR, _ARCH, _ARG2_LOW = 0, 4, 16 + 2 * 8  # args[2]: prot (mmap, mprotect), shmflg (shmat)
_RET_ALLOW, _RET_KILL, _RET_EPERM = 0x7FFF_0000, 0x8000_0000, 0x0005_0000 | errno.EPERM
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_PROT_WRITE, _PROT_EXEC, _SHM_EXEC = 0x2, 0x4, 0o100000

# machine -> (AUDIT_ARCH_*, mmap, mprotect, pkey_mprotect, shmat)
_ARCHES = {
    "x86_64": (0xC000_003E, 9, 10, 329, 30),
    "aarch64": (0xC000_00B7, 222, 226, 288, 196),
}

_SCMP_ACT_ALLOW = 0x7FFF_0000
_SCMP_CMP_EQ = 4


def _scmp_act_errno(code: int) -> int:
    return 0x0005_0000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def unit_settings(unit: Path) -> list[tuple[str, str]]:
    """The ``[Service]`` assignments of ``unit``, in order."""
    section, found = "", []
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            key, _, value = line.partition("=")
            found.append((key.strip(), value.strip()))
    return found


def syscall_groups() -> dict[str, list[str]]:
    """Every ``@group`` systemd knows, with its members (names or nested ``@groups``)."""
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for line in listing.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.strip() and not line.strip().startswith("#") and line.startswith(" "):
            current.append(line.strip())
    return groups


def allowed_syscalls(filters: list[str], groups: dict[str, list[str]]) -> set[str]:
    """The allow list that ``SystemCallFilter=`` lines (first one an allow list) describe."""

    def expand(name: str) -> set[str]:
        if not name.startswith("@"):
            return {name}
        return set().union(*(expand(member) for member in groups[name]))

    if not filters or filters[0].startswith("~"):
        raise ValueError("only units whose first SystemCallFilter= is an allow list")
    allowed: set[str] = set()
    for line in filters:
        deny = line.startswith("~")
        names = set().union(*(expand(n) for n in line.removeprefix("~").split()))
        allowed = allowed - names if deny else allowed | names
    return allowed


def load_syscall_filter(allowed: set[str], families: list[int], error: int) -> None:
    """Load an allow list of system calls (``socket`` only for ``families``) via libseccomp."""
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_scmp_act_errno(error))
    for name in sorted(allowed):
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            continue  # not a system call of this architecture
        if name == "socket" and families:
            for family in families:
                cmp = (_ArgCmp * 1)(_ArgCmp(0, _SCMP_CMP_EQ, family, 0))
                _check(lib.seccomp_rule_add_array(ctx, _SCMP_ACT_ALLOW, number, 1, cmp), name)
        else:
            _check(lib.seccomp_rule_add_array(ctx, _SCMP_ACT_ALLOW, number, 0, None), name)
    _check(lib.seccomp_load(ctx), "seccomp_load")


def load_mdwe_filter(machine: str) -> None:
    """Set ``no_new_privs`` and load systemd 252's MemoryDenyWriteExecute= rule."""
    audit_arch, nr_mmap, nr_mprotect, nr_pkey_mprotect, nr_shmat = _ARCHES[machine]
    program = [
        (_LD_W_ABS, 0, 0, _ARCH),
        (_JEQ_K, 1, 0, audit_arch),
        (_RET_K, 0, 0, _RET_KILL),  # a foreign ABI: refuse outright
        (_LD_W_ABS, 0, 0, _NR),
        (_JEQ_K, 4, 0, nr_mmap),  # -> 9
        (_JEQ_K, 6, 0, nr_mprotect),  # -> 12
        (_JEQ_K, 5, 0, nr_pkey_mprotect),  # -> 12
        (_JEQ_K, 7, 0, nr_shmat),  # -> 15
        (_RET_K, 0, 0, _RET_ALLOW),
        (_LD_W_ABS, 0, 0, _ARG2_LOW),  # 9: mmap, refuse PROT_WRITE|PROT_EXEC together
        (_AND_K, 0, 0, _PROT_WRITE | _PROT_EXEC),
        (_JEQ_K, 7, 6, _PROT_WRITE | _PROT_EXEC),
        (_LD_W_ABS, 0, 0, _ARG2_LOW),  # 12: mprotect, pkey_mprotect: refuse PROT_EXEC
        (_AND_K, 0, 0, _PROT_EXEC),
        (_JEQ_K, 4, 3, _PROT_EXEC),
        (_LD_W_ABS, 0, 0, _ARG2_LOW),  # 15: shmat: refuse SHM_EXEC
        (_AND_K, 0, 0, _SHM_EXEC),
        (_JEQ_K, 1, 0, _SHM_EXEC),
        (_RET_K, 0, 0, _RET_ALLOW),  # 18
        (_RET_K, 0, 0, _RET_EPERM),  # 19
    ]
    code = b"".join(struct.pack("<HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(len(code) // 8, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    _check(libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "MDWE")


def _check(result: int, what: str) -> None:
    if result != 0:
        code = -result if result < 0 else ctypes.get_errno()
        raise OSError(code, f"cannot load the filter ({what}): {os.strerror(code)}")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    machine = platform.machine()
    if machine not in _ARCHES:
        print(f"run-confined: no system call table for {machine}", file=sys.stderr)
        return 2
    settings = unit_settings(Path(argv[0]))
    values = {key: value for key, value in settings}
    filters = [value for key, value in settings if key == "SystemCallFilter"]
    families = [
        int(getattr(socket, name)) for name in values.get("RestrictAddressFamilies", "").split()
    ]
    error = getattr(errno, values.get("SystemCallErrorNumber", "EPERM"))
    if values.get("MemoryDenyWriteExecute") == "yes":
        load_mdwe_filter(machine)
    if filters:
        load_syscall_filter(allowed_syscalls(filters, syscall_groups()), families, error)
    os.execvp(argv[1], argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
