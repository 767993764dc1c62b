"""Measurement providers: turn a firmware profile into a set of SHA-256 measurements.

:class:`MeasurementProvider` is the interface (the TPM 2.0 provider,
:class:`edge_agent.attest.tpm.TpmProvider`, is the other one, for profiles with ``[tpm]``);
:class:`FileFactProvider` is the default: it hashes files and directory trees with SHA-256
and reads system facts (architecture, kernel release and command line, machine id, device
model), each fact measured as the SHA-256 of its text.

Cost: a file is re-hashed only when its ``(dev, inode, size, mtime, ctime)`` changed since
the last measurement (ctime too, because ``touch -d`` can restore an mtime but nothing
unprivileged can restore a ctime), so a re-measurement of an unchanged device is a few
``stat`` calls. Every read is bounded by the profile's ``[limits]``.

A file that cannot be measured is an item with an ``error`` and no digest, never an
exception: at start the agent refuses to run with one (:func:`edge_agent.attest.config
.open_attestor`); later it makes the local verdict fail, so the gate denies.

Paths are read under ``root`` (``/`` on a device; a fixture directory in tests).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge_agent.protocol import dcbor
from edge_agent.protocol.expectations import measured_digest
from edge_agent.protocol.firmware_profile import Limits, Measure, Profile

__all__ = ["FileFactProvider", "Measurement", "MeasurementProvider", "MeasurementSet"]

CHUNK_BYTES = 64 * 1024
"""Files are read in chunks below glibc malloc's mmap threshold (128 KiB): 1 MiB reads left
about 1 MiB of freed heap resident in the idle agent, which measures at every re-attestation
(docs/performance-profile.md, phase 2); hashing is as fast (69 files, 27 MB: 18 ms against 22)."""
MAX_FACT_BYTES = 4096
_StatKey = tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measured item. ``value`` is a fact's text; ``error`` says why there is no digest."""

    name: str
    kind: str
    source: str
    scope: str
    digest: bytes | None
    value: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class MeasurementSet:
    """Everything one measurement of a profile produced, in profile order."""

    profile: str
    items: tuple[Measurement, ...]

    @property
    def digests(self) -> dict[str, bytes]:
        """Name -> digest of every item that could be measured (what evidence carries)."""
        return {m.name: m.digest for m in self.items if m.digest is not None}

    @property
    def digest(self) -> bytes:
        """The digest of the whole measured state (bound into evidence and results)."""
        return measured_digest(self.digests)

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(f"{m.name} ({m.source}): {m.error}" for m in self.items if m.error)


class MeasurementProvider(Protocol):
    """Something that measures the device for one profile."""

    @property
    def profile(self) -> Profile: ...

    def measure(self) -> MeasurementSet:
        """Measure every item of the profile now; never raises for an unreadable item."""
        ...


class _Budget:
    """Bytes and files one measurement may still cover (the profile's limits)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.bytes_left = limits.max_total_bytes

    def take(self, size: int) -> str | None:
        if size > self.limits.max_file_bytes:
            return f"{size} bytes, over the profile's max_file_bytes ({self.limits.max_file_bytes})"
        if size > self.bytes_left:
            return f"the measurement would exceed max_total_bytes ({self.limits.max_total_bytes})"
        self.bytes_left -= size
        return None


class _MeasureError(Exception):
    """One item cannot be measured (kept as the item's ``error``)."""


class FileFactProvider:
    """The default provider: SHA-256 of files and trees, and system facts, under ``root``."""

    def __init__(self, profile: Profile, root: Path = Path("/")) -> None:
        self._profile = profile
        self.root = root
        self._cache: dict[str, tuple[_StatKey, bytes]] = {}

    @property
    def profile(self) -> Profile:
        return self._profile

    def measure(self) -> MeasurementSet:
        budget = _Budget(self._profile.limits)
        seen: dict[str, tuple[_StatKey, bytes]] = {}
        items = tuple(self._item(m, budget, seen) for m in self._profile.measure)
        self._cache = seen
        return MeasurementSet(self._profile.name, items)

    def _item(
        self, measure: Measure, budget: _Budget, seen: dict[str, tuple[_StatKey, bytes]]
    ) -> Measurement:
        value = None
        try:
            if measure.file is not None:
                digest = self._file(self._path(measure.file), budget, seen)
            elif measure.tree is not None:
                digest = self._tree(self._path(measure.tree), budget, seen)
            else:
                value = self._fact(str(measure.fact))
                digest = hashlib.sha256(value.encode()).digest()
        except _MeasureError as exc:
            return Measurement(
                measure.name, measure.kind, measure.source, measure.scope, None, error=str(exc)
            )
        return Measurement(measure.name, measure.kind, measure.source, measure.scope, digest, value)

    def _path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def _file(self, path: Path, budget: _Budget, seen: dict[str, tuple[_StatKey, bytes]]) -> bytes:
        """The file's digest: from the cache when ``stat`` shows it unchanged, else hashed
        from an open descriptor whose own ``fstat`` gives the key it is cached under."""
        try:
            info = os.stat(path)
        except OSError as exc:
            raise _MeasureError(f"cannot read {path}: {exc.strerror or exc}") from exc
        cached = self._cache.get(str(path))
        if cached is not None and cached[0] == _key(info) and stat.S_ISREG(info.st_mode):
            self._charge(path, info.st_size, budget)
            seen[str(path)] = cached
            return cached[1]
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise _MeasureError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _MeasureError(f"{path} is not a regular file")
            self._charge(path, info.st_size, budget)
            digest = _hash_fd(fd, info.st_size, path)
        finally:
            os.close(fd)
        seen[str(path)] = (_key(info), digest)
        return digest

    @staticmethod
    def _charge(path: Path, size: int, budget: _Budget) -> None:
        refused = budget.take(size)
        if refused is not None:
            raise _MeasureError(f"{path} is {refused}")

    def _tree(self, top: Path, budget: _Budget, seen: dict[str, tuple[_StatKey, bytes]]) -> bytes:
        if not top.is_dir():
            raise _MeasureError(f"{top} is not a readable directory")
        listing: list[list[object]] = []
        problems: list[OSError] = []
        for directory, dirs, files in os.walk(top, onerror=problems.append):
            dirs.sort()
            for name in sorted(files):
                path = Path(directory) / name
                relative = str(path.relative_to(top))
                if len(listing) >= self._profile.limits.max_tree_files:
                    raise _MeasureError(
                        f"{top} holds more than max_tree_files "
                        f"({self._profile.limits.max_tree_files}) files"
                    )
                listing.append([relative, *self._tree_entry(path, budget, seen)])
        if problems:
            raise _MeasureError(f"cannot walk {top}: {problems[0]}")
        return hashlib.sha256(dcbor.encode(listing)).digest()

    def _tree_entry(
        self, path: Path, budget: _Budget, seen: dict[str, tuple[_StatKey, bytes]]
    ) -> tuple[str, bytes]:
        try:
            mode = path.lstat().st_mode
        except OSError as exc:
            raise _MeasureError(f"cannot stat {path}: {exc.strerror or exc}") from exc
        if stat.S_ISLNK(mode):
            return "link", hashlib.sha256(os.fsencode(os.readlink(path))).digest()
        if not stat.S_ISREG(mode):
            raise _MeasureError(f"{path} is neither a regular file nor a symbolic link")
        return "file", self._file(path, budget, seen)

    def _fact(self, fact: str) -> str:
        if fact == "architecture":
            return os.uname().machine
        if fact == "kernel_release":
            return self._read_fact(self._path("/proc/sys/kernel/osrelease"))
        if fact == "kernel_cmdline":
            return self._read_fact(self._path("/proc/cmdline"))
        if fact == "machine_id":
            value = self._read_fact(self._path("/etc/machine-id"))
            if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
                raise _MeasureError("/etc/machine-id does not hold a 32-digit hex machine id")
            return value
        if fact == "device_model":
            for candidate in ("/proc/device-tree/model", "/sys/class/dmi/id/product_name"):
                path = self._path(candidate)
                if path.exists():
                    return self._read_fact(path)
            raise _MeasureError("neither a device-tree model nor a DMI product name is readable")
        raise _MeasureError(f"unknown fact {fact!r}")

    @staticmethod
    def _read_fact(path: Path) -> str:
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_FACT_BYTES + 1)
        except OSError as exc:
            raise _MeasureError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if len(raw) > MAX_FACT_BYTES:
            raise _MeasureError(f"{path} is longer than {MAX_FACT_BYTES} bytes")
        text = raw.replace(b"\0", b"").decode("utf-8", "replace").strip()
        if not text:
            raise _MeasureError(f"{path} is empty")
        return text


def _key(info: os.stat_result) -> _StatKey:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _hash_fd(fd: int, size: int, path: Path) -> bytes:
    """SHA-256 of the first ``size`` bytes of ``fd``; a file that changes size while it is
    read cannot be measured (its digest would describe no state the file was ever in)."""
    digest = hashlib.sha256()
    left = size
    while left > 0:
        chunk = os.read(fd, min(CHUNK_BYTES, left))
        if not chunk:
            raise _MeasureError(f"{path} shrank while it was measured")
        digest.update(chunk)
        left -= len(chunk)
    if os.read(fd, 1):
        raise _MeasureError(f"{path} grew while it was measured")
    return digest.digest()
