"""Every rule a firmware profile is checked with, one scenario each, as the hub and agent see it.

Profiles are checked by :mod:`edge_agent.protocol.settings` (no pydantic, so an agent that
measures stays small at idle); these scenarios pin the rules the pydantic models applied
before, each named by where the first error is: TOML's types as given (no bool or float for
an int, no string for a number), every bound, every pattern and own check, no unknown key at
any depth, required fields, and the rules over a whole measure or profile.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest

from edge_agent.errors import ConfigError
from edge_agent.protocol.firmware_profile import Limits, Measure, Profile, Tpm, parse_profile
from edge_agent.protocol.settings import SettingsError, parse

OS_RELEASE = {"name": "os-release", "file": "/etc/os-release"}
BASE: dict[str, Any] = {
    "name": "p",
    "architecture": "x86_64",
    "reattest_interval_s": 300,
    "heartbeat_interval_s": 60,
    "measure": [OS_RELEASE],
}
TPM = {"pcrs": [0, 7]}
DROP = object()
"""A patch value that removes the key."""


@dataclass(frozen=True)
class Case:
    name: str
    patch: dict[str, Any]
    error: str = ""
    """The start of the error (its dotted path and message); empty: the profile is valid."""


def _measure(**fields: Any) -> dict[str, Any]:
    return {"measure": [{**OS_RELEASE, **fields}]}


def _many(count: int) -> list[dict[str, str]]:
    return [{"name": f"f{i}", "file": f"/f{i}"} for i in range(count)]


CASES = [
    Case("the minimal profile", {}),
    Case("every table", {"limits": {"max_tree_files": 5}, "tpm": TPM, "description": "d"}),
    Case(
        "a fact and a tree",
        {"measure": [{"name": "k", "fact": "kernel_release"}, {"name": "t", "tree": "/opt"}]},
    ),
    # type strictness: TOML's types as given
    Case("a number for a string", {"name": 5}, "name: Input should be a valid string"),
    Case(
        "a bool for an int",
        {"reattest_interval_s": True},
        "reattest_interval_s: Input should be a valid integer",
    ),
    Case(
        "a float for an int",
        {"reattest_interval_s": 300.0},
        "reattest_interval_s: Input should be a valid integer",
    ),
    Case(
        "a string for an int",
        {"heartbeat_interval_s": "60"},
        "heartbeat_interval_s: Input should be a valid integer",
    ),
    Case("a number for a Literal", {"architecture": 64}, "architecture: Input should be 'x86_64'"),
    Case(
        "a table for an array of tables",
        {"measure": OS_RELEASE},
        "measure: Input should be a valid list",
    ),
    Case(
        "a value for a table in an array",
        {"measure": ["os-release"]},
        "measure.0: Input should be a table of Measure",
    ),
    Case("a value for a table", {"limits": 3}, "limits: Input should be a table of Limits"),
    Case("an array for an optional table", {"tpm": [0]}, "tpm: Input should be a table of Tpm"),
    Case("a value for an array", {"tpm": {"pcrs": 7}}, "tpm.pcrs: Input should be a valid list"),
    Case(
        "a string in an int array",
        {"tpm": {"pcrs": [0, "7"]}},
        "tpm.pcrs.1: Input should be a valid integer",
    ),
    Case(
        "a bool in an int array",
        {"tpm": {"pcrs": [True]}},
        "tpm.pcrs.0: Input should be a valid integer",
    ),
    Case(
        "a float for a handle",
        {"tpm": {**TPM, "ak_handle": 2164326402.0}},
        "tpm.ak_handle: Input should be a valid integer",
    ),
    Case(
        "a bool for a nested int",
        {"limits": {"max_file_bytes": False}},
        "limits.max_file_bytes: Input should be a valid",
    ),
    Case(
        "a number for a nested string",
        _measure(file=1),
        "measure.0.file: Input should be a valid string",
    ),
    # bounds
    Case(
        "an interval of 0",
        {"reattest_interval_s": 0},
        "reattest_interval_s: Input should be greater than or equal to 1",
    ),
    Case(
        "an interval over a day",
        {"reattest_interval_s": 86_401},
        "reattest_interval_s: Input should be less than or equal to 86400",
    ),
    Case(
        "a heartbeat over an hour",
        {"heartbeat_interval_s": 3601},
        "heartbeat_interval_s: Input should be less than or equal to 3600",
    ),
    Case(
        "a file limit of 0",
        {"limits": {"max_file_bytes": 0}},
        "limits.max_file_bytes: Input should be greater than or equal to 1",
    ),
    Case(
        "a total limit over 64 GiB",
        {"limits": {"max_total_bytes": 64 * 1024**3 + 1}},
        "limits.max_total_bytes: Input should be less than",
    ),
    Case(
        "a tree limit over a million",
        {"limits": {"max_tree_files": 1_000_001}},
        "limits.max_tree_files: Input should be less than",
    ),
    Case(
        "a description of 501 characters",
        {"description": "d" * 501},
        "description: String should have at most 500 characters",
    ),
    Case(
        "a measure description of 201",
        _measure(description="d" * 201),
        "measure.0.description: String should have at most 200",
    ),
    Case(
        "a TPM description of 201",
        {"tpm": {**TPM, "description": "d" * 201}},
        "tpm.description: String should have at most 200",
    ),
    Case("no measurement", {"measure": []}, "measure: List should have at least 1 item"),
    Case("64 measurements", {"measure": _many(64)}),
    Case("65 measurements", {"measure": _many(65)}, "measure: List should have at most 64 items"),
    Case("no PCR", {"tpm": {"pcrs": []}}, "tpm.pcrs: List should have at least 1 item"),
    Case(
        "25 PCRs", {"tpm": {"pcrs": list(range(25))}}, "tpm.pcrs: List should have at most 24 items"
    ),
    Case(
        "a handle below the owner range",
        {"tpm": {**TPM, "ak_handle": 0x80FFFFFF}},
        "tpm.ak_handle: Input should be greater than or equal to",
    ),
    Case(
        "a handle above the owner range",
        {"tpm": {**TPM, "ak_handle": 0x81800000}},
        "tpm.ak_handle: Input should be less than or equal to",
    ),
    # patterns and Literals
    Case("a name starting with a dash", {"name": "-p"}, "name: String should match pattern"),
    Case("a name with a newline", {"name": "p\n"}, "name: String should match pattern"),
    Case("a name of 65 characters", {"name": "p" * 65}, "name: String should match pattern"),
    Case(
        "an unknown architecture",
        {"architecture": "sparc"},
        "architecture: Input should be 'x86_64' or 'aarch64' or 'armv7l'",
    ),
    Case(
        "an unknown scope",
        _measure(scope="fleet"),
        "measure.0.scope: Input should be 'class' or 'device'",
    ),
    Case(
        "an unknown fact",
        {"measure": [{"name": "t", "fact": "cpu_temperature"}]},
        "measure.0.fact: Input should be 'architecture'",
    ),
    Case("an unknown bank", {"tpm": {**TPM, "bank": "sha1"}}, "tpm.bank: Input should be 'sha256'"),
    # unknown keys, at every depth
    Case("an unknown key", {"flavour": "x"}, "flavour: Extra inputs are not permitted"),
    Case(
        "an unknown limit",
        {"limits": {"max_files": 1}},
        "limits.max_files: Extra inputs are not permitted",
    ),
    Case(
        "an unknown measure key",
        _measure(hash="sha1"),
        "measure.0.hash: Extra inputs are not permitted",
    ),
    Case(
        "an unknown TPM key",
        {"tpm": {**TPM, "locality": 3}},
        "tpm.locality: Extra inputs are not permitted",
    ),
    # required fields
    Case("no name", {"name": DROP}, "name: Field required"),
    Case("no architecture", {"architecture": DROP}, "architecture: Field required"),
    Case("no measure array", {"measure": DROP}, "measure: Field required"),
    Case(
        "a measure without a name", {"measure": [{"file": "/x"}]}, "measure.0.name: Field required"
    ),
    Case(
        "a TPM table without PCRs",
        {"tpm": {"tcti": "device:/dev/tpmrm0"}},
        "tpm.pcrs: Field required",
    ),
    # a field's own check
    Case(
        "a measure name with a space",
        _measure(name="OS release"),
        "measure.0.name: must be 1-64 of a-z 0-9",
    ),
    Case(
        "a relative file",
        _measure(file="etc/os-release"),
        "measure.0.file: must be an absolute path without '..'",
    ),
    Case(
        "a tree with '..'",
        {"measure": [{"name": "t", "tree": "/opt/../etc"}]},
        "measure.0.tree: must be an absolute path",
    ),
    Case(
        "a file with a NUL",
        _measure(file="/etc/os\0release"),
        "measure.0.file: must be an absolute path",
    ),
    Case("PCR 24", {"tpm": {"pcrs": [24]}}, "tpm.pcrs: PCR indexes are 0 to 23"),
    Case("a PCR twice", {"tpm": {"pcrs": [7, 0, 7]}}, "tpm.pcrs: a PCR is listed twice"),
    Case(
        "an unknown TCTI",
        {"tpm": {**TPM, "tcti": "/dev/tpm0"}},
        "tpm.tcti: must be NAME:CONFIG with NAME one of device, swtpm",
    ),
    Case(
        "a TCTI with a shell",
        {"tpm": {**TPM, "tcti": "device:/dev/tpm0;rm -rf"}},
        "tpm.tcti: must be NAME:CONFIG",
    ),
    # rules over a whole measure or profile
    Case(
        "two sources",
        _measure(tree="/etc"),
        "measure.0: measure 'os-release' needs exactly one of file, tree or fact",
    ),
    Case(
        "no source",
        {"measure": [{"name": "x"}]},
        "measure.0: measure 'x' needs exactly one of file, tree or fact",
    ),
    Case(
        "a name twice",
        {"measure": [OS_RELEASE, OS_RELEASE]},
        "(top level): measurement name(s) os-release given more than once",
    ),
    Case(
        "measures and PCRs over 64",
        {"measure": _many(60), "tpm": {"pcrs": [0, 1, 2, 3, 4]}},
        "(top level): [[measure]] items and [tpm] pcrs together exceed 64",
    ),
    # several errors: all counted, the first field's named, unknown keys last
    Case(
        "three errors",
        {"flavour": 1, "heartbeat_interval_s": 0, "name": "-"},
        "name: String should match pattern '[A-Za-z0-9][A-Za-z0-9._-]{0,63}' (3 error(s) in all)",
    ),
    Case(
        "nested errors",
        {"flavour": 1, "limits": {"x": 1}, "measure": [{"name": "A"}]},
        "limits.x: Extra inputs are not permitted (3 error(s) in all)",
    ),
]


def _patched(patch: dict[str, Any]) -> dict[str, Any]:
    data = {**BASE, **patch}
    return {key: value for key, value in data.items() if value is not DROP}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_profile_rule(case: Case) -> None:
    data = _patched(case.patch)
    if not case.error:
        assert isinstance(parse(Profile, data), Profile)
        return
    with pytest.raises(SettingsError) as raised:
        parse(Profile, data)
    assert str(raised.value).startswith(case.error)


def test_the_hub_and_the_agent_see_the_first_error_with_the_profile_named() -> None:
    text = b'name = "p"\narchitecture = "x86_64"\nreattest_interval_s = 1\n'
    with pytest.raises(ConfigError) as raised:
        parse_profile(text, "plc-7.toml")
    assert raised.value.message == (
        "the firmware profile plc-7.toml is invalid: heartbeat_interval_s: Field required "
        "(2 error(s) in all)"
    )


def test_values_take_their_normal_form() -> None:
    profile = parse(Profile, _patched({"tpm": {"pcrs": [7, 0, 4]}}))
    assert profile.tpm is not None and profile.tpm.pcrs == (0, 4, 7)
    assert profile.tpm.measure_names == ("pcr:sha256:0", "pcr:sha256:4", "pcr:sha256:7")
    assert profile.measure == (Measure(name="os-release", file="/etc/os-release"),)
    assert profile.limits == Limits() and profile.limits.max_tree_files == 20_000
    assert profile.scopes == {
        "os-release": "class",
        **dict.fromkeys(profile.tpm.measure_names, "class"),
    }


@pytest.mark.parametrize(
    "build",
    [
        lambda: Measure(name="x"),
        lambda: Measure(name="x", file="relative"),
        lambda: Tpm(pcrs=(1, 1)),
        lambda: Limits(max_file_bytes=True),
        lambda: Profile(
            name="p",
            architecture="x86_64",
            reattest_interval_s=1,
            heartbeat_interval_s=1,
            measure=(),
        ),
    ],
    ids=["no-source", "relative-file", "pcr-twice", "bool-for-int", "no-measure"],
)
def test_a_profile_built_in_code_is_checked_too(build: object) -> None:
    with pytest.raises(SettingsError):
        build()  # type: ignore[operator]


def test_profiles_are_frozen_and_hashable() -> None:
    profile = parse(Profile, _patched({"tpm": TPM}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.name = "q"  # type: ignore[misc]
    assert hash(profile) == hash(parse(Profile, _patched({"tpm": TPM})))
