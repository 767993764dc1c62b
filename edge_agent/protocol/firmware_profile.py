"""Firmware profiles (``firmware_profiles/NAME.toml``): what a device class is and measures.

A profile is validated once, at start, by :mod:`edge_agent.protocol.settings` (strict,
frozen, no unknown key; no pydantic, so an agent that measures stays small at idle): a
missing or unknown field, a wrong type or an out-of-range value stops the agent with a
message naming the field, instead of it starting half-measured. The shipped profiles
document every field in comments; the short form::

    name = "generic-x86_64"
    architecture = "x86_64"            # x86_64 | aarch64 | armv7l
    reattest_interval_s = 300          # re-measure this often
    heartbeat_interval_s = 60          # signed status at least this often

    [limits]                           # bounds on one measurement
    max_file_bytes = 268435456
    max_total_bytes = 1073741824
    max_tree_files = 20000

    [[measure]]                        # one per measured item; exactly one of file/tree/fact
    name = "os-release"
    file = "/etc/os-release"
    scope = "class"                    # class: same on every device; device: per device

    [tpm]                              # optional: measure PCRs and quote them (TPM 2.0)
    pcrs = [0, 2, 4, 7]                # sha256 bank; each is measurement "pcr:sha256:N"
    tcti = "device:/dev/tpmrm0"        # or "swtpm:host=127.0.0.1,port=2321" (tests)
    ak_handle = 0x81010002             # persistent handle of the attestation key
    scope = "class"

This module validates profile bytes; it opens no file (``edge_agent.attest.profile`` reads
one for the agent, the hub reads its own) and measures nothing. It is in the shared core
because the hub reads the same profiles to judge attestation reports.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from typing import Literal

from edge_agent.errors import ConfigError
from edge_agent.protocol.expectations import MAX_MEASUREMENTS
from edge_agent.protocol.settings import Section, SettingsError, parse, setting

__all__ = [
    "MAX_PROFILE_BYTES",
    "Architecture",
    "Fact",
    "Limits",
    "Measure",
    "Profile",
    "Tpm",
    "parse_profile",
    "pcr_name",
]

MAX_PROFILE_BYTES = 64 * 1024
Architecture = Literal["x86_64", "aarch64", "armv7l"]
Fact = Literal["architecture", "kernel_release", "kernel_cmdline", "machine_id", "device_model"]
"""Facts the default provider knows (see :mod:`edge_agent.attest.measure`)."""
_MEASURE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_GiB = 1024**3
_TCTI_NAMES = ("device", "swtpm", "mssim", "tabrmd")
_TCTI_CONF = re.compile(r"[A-Za-z0-9_./=,:-]{0,200}")
AK_HANDLE_FIRST = 0x81000000
AK_HANDLE_LAST = 0x817FFFFF
"""Persistent handles of the owner hierarchy (TCG: 0x81000000 to 0x817FFFFF)."""
DEFAULT_AK_HANDLE = 0x81010002
PCR_COUNT = 24


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits(Section):
    """Bounds on one measurement, so a huge or runaway file cannot stall the agent."""

    max_file_bytes: int = setting(256 * 1024**2, ge=1, le=16 * _GiB)
    max_total_bytes: int = setting(_GiB, ge=1, le=64 * _GiB)
    max_tree_files: int = setting(20_000, ge=1, le=1_000_000)


def _measure_name(value: str) -> str:
    if not _MEASURE_NAME.fullmatch(value):
        raise ValueError("must be 1-64 of a-z 0-9 . _ - starting with a letter or digit")
    return value


def _absolute(value: str) -> str:
    if not value.startswith("/") or "\0" in value or ".." in value.split("/"):
        raise ValueError("must be an absolute path without '..'")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Measure(Section):
    """One measured item: a file, a directory tree, or a system fact."""

    name: str = setting(check=_measure_name)
    file: str | None = setting(None, check=_absolute)
    tree: str | None = setting(None, check=_absolute)
    fact: Fact | None = None
    scope: Literal["class", "device"] = "class"
    description: str = setting("", max_length=200)

    def check(self) -> None:
        given = [s for s in (self.file, self.tree, self.fact) if s is not None]
        if len(given) != 1:
            raise ValueError(f"measure {self.name!r} needs exactly one of file, tree or fact")

    @property
    def kind(self) -> str:
        return "file" if self.file is not None else "tree" if self.tree is not None else "fact"

    @property
    def source(self) -> str:
        return self.file or self.tree or str(self.fact)


def _pcrs(value: tuple[int, ...]) -> tuple[int, ...]:
    if any(not 0 <= pcr < PCR_COUNT for pcr in value):
        raise ValueError(f"PCR indexes are 0 to {PCR_COUNT - 1}")
    if len(set(value)) != len(value):
        raise ValueError("a PCR is listed twice")
    return tuple(sorted(value))


def _tcti(value: str) -> str:
    name, _, conf = value.partition(":")
    if name not in _TCTI_NAMES or not _TCTI_CONF.fullmatch(conf):
        raise ValueError(
            f"must be NAME:CONFIG with NAME one of {', '.join(_TCTI_NAMES)} "
            '(e.g. "device:/dev/tpmrm0" or "swtpm:host=127.0.0.1,port=2321")'
        )
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Tpm(Section):
    """The optional TPM 2.0 part of a profile: PCRs measured and quoted, and where the TPM
    and its attestation key are. Only a profile with this table needs ``tpm2-pytss``."""

    pcrs: tuple[int, ...] = setting(min_length=1, max_length=PCR_COUNT, check=_pcrs)
    bank: Literal["sha256"] = "sha256"
    tcti: str = setting("device:/dev/tpmrm0", check=_tcti)
    ak_handle: int = setting(DEFAULT_AK_HANDLE, ge=AK_HANDLE_FIRST, le=AK_HANDLE_LAST)
    scope: Literal["class", "device"] = "class"
    description: str = setting("", max_length=200)

    @property
    def measure_names(self) -> tuple[str, ...]:
        """The measurement name of each PCR, in PCR order: ``pcr:sha256:N``."""
        return tuple(pcr_name(self.bank, pcr) for pcr in self.pcrs)


def pcr_name(bank: str, pcr: int) -> str:
    """The measurement name of PCR ``pcr`` of ``bank`` (``pcr:sha256:7``)."""
    return f"pcr:{bank}:{pcr}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile(Section):
    """A device class: architecture, timing, limits and what is measured."""

    name: str = setting(pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
    description: str = setting("", max_length=500)
    architecture: Architecture
    reattest_interval_s: int = setting(ge=1, le=86_400)
    heartbeat_interval_s: int = setting(ge=1, le=3600)
    limits: Limits = field(default_factory=Limits)
    measure: tuple[Measure, ...] = setting(min_length=1, max_length=MAX_MEASUREMENTS)
    tpm: Tpm | None = None

    def check(self) -> None:
        names = [m.name for m in self.measure]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"measurement name(s) {', '.join(twice)} given more than once")
        if self.tpm is not None and len(names) + len(self.tpm.pcrs) > MAX_MEASUREMENTS:
            raise ValueError(
                f"[[measure]] items and [tpm] pcrs together exceed {MAX_MEASUREMENTS} measurements"
            )

    @property
    def scopes(self) -> dict[str, str]:
        """Measurement name -> scope (``class`` or ``device``) of everything measured,
        PCRs included: what ``edge-hub attest expect`` sorts a report by."""
        scopes: dict[str, str] = {m.name: m.scope for m in self.measure}
        if self.tpm is not None:
            scopes.update(dict.fromkeys(self.tpm.measure_names, self.tpm.scope))
        return scopes


def parse_profile(raw: bytes, where: str) -> Profile:
    """Validate profile TOML ``raw`` (``where`` names it in errors).

    Raises:
        ConfigError: not UTF-8 TOML, or not a valid profile (the first error named by its
            field's dotted path, and how many there are).
    """
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"the firmware profile {where} is not valid TOML: {exc}") from exc
    try:
        return parse(Profile, data)
    except SettingsError as exc:
        raise ConfigError(f"the firmware profile {where} is invalid: {exc}") from exc
