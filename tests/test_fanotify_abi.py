"""The kernel interface is spelled out by hand, so it is pinned here: constants and struct
layouts against ``linux/fanotify.h`` (the literal values, and the installed header when there
is one), and the event parser against crafted buffers: it reads what the kernel writes and
refuses anything else."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from edge_agent.fanotify import _abi
from edge_agent.fanotify.errors import AbiError

HEADER = Path("/usr/include/linux/fanotify.h")

PINNED = {
    "FAN_OPEN_EXEC_PERM": 0x0004_0000,
    "FAN_Q_OVERFLOW": 0x0000_4000,
    "FAN_CLOEXEC": 0x01,
    "FAN_NONBLOCK": 0x02,
    "FAN_CLASS_CONTENT": 0x04,
    "FAN_UNLIMITED_QUEUE": 0x10,
    "FAN_MARK_ADD": 0x01,
    "FAN_MARK_REMOVE": 0x02,
    "FAN_MARK_FILESYSTEM": 0x100,
    "FAN_ALLOW": 0x01,
    "FAN_DENY": 0x02,
    "FAN_NOFD": -1,
    "FANOTIFY_METADATA_VERSION": 3,
}


class _Metadata(ctypes.Structure):
    """``struct fanotify_event_metadata`` as the C compiler lays it out."""

    _fields_ = (
        ("event_len", ctypes.c_uint32),
        ("vers", ctypes.c_uint8),
        ("reserved", ctypes.c_uint8),
        ("metadata_len", ctypes.c_uint16),
        ("mask", ctypes.c_uint64),
        ("fd", ctypes.c_int32),
        ("pid", ctypes.c_int32),
    )


class _Response(ctypes.Structure):
    _fields_ = (("fd", ctypes.c_int32), ("response", ctypes.c_uint32))


def _event(
    fd: int, pid: int, mask: int = _abi.FAN_OPEN_EXEC_PERM, vers: int = 3, extra: bytes = b""
) -> bytes:
    size = _abi.FAN_EVENT_METADATA_LEN
    return _abi.METADATA.pack(size + len(extra), vers, 0, size, mask, fd, pid) + extra


@pytest.mark.parametrize(("name", "value"), sorted(PINNED.items()))
def test_constants_have_the_kernel_values(name: str, value: int) -> None:
    assert getattr(_abi, name) == value


@pytest.mark.skipif(not HEADER.is_file(), reason="no kernel headers installed")
@pytest.mark.parametrize("name", sorted(n for n in PINNED if n != "FAN_NOFD"))
def test_constants_match_the_installed_header(name: str) -> None:
    match = re.search(rf"#define\s+{name}\s+(0x[0-9a-fA-F]+|\d+)", HEADER.read_text())
    assert match is not None
    assert int(match.group(1), 0) == getattr(_abi, name)


def test_event_metadata_layout_is_the_c_struct() -> None:
    assert _abi.FAN_EVENT_METADATA_LEN == ctypes.sizeof(_Metadata) == 24
    raw = _abi.METADATA.pack(24, 3, 0, 24, 0x0004_0000, 7, 4242)
    parsed = _Metadata.from_buffer_copy(raw)
    assert (parsed.event_len, parsed.vers, parsed.metadata_len) == (24, 3, 24)
    assert (parsed.mask, parsed.fd, parsed.pid) == (0x0004_0000, 7, 4242)
    assert [getattr(_Metadata, f).offset for f, _ in _Metadata._fields_] == [0, 4, 5, 6, 8, 16, 20]


def test_response_layout_is_the_c_struct() -> None:
    assert _abi.FAN_RESPONSE_LEN == ctypes.sizeof(_Response) == 8
    raw = _abi.pack_response(9, False)
    parsed = _Response.from_buffer_copy(raw)
    assert (parsed.fd, parsed.response) == (9, _abi.FAN_DENY)
    assert _Response.from_buffer_copy(_abi.pack_response(9, True)).response == _abi.FAN_ALLOW


def test_several_events_in_one_read_are_parsed_in_order() -> None:
    data = _event(5, 100) + _event(6, 101) + _event(_abi.FAN_NOFD, 0, mask=_abi.FAN_Q_OVERFLOW)
    assert _abi.parse_events(data) == [
        _abi.Event(_abi.FAN_OPEN_EXEC_PERM, 5, 100),
        _abi.Event(_abi.FAN_OPEN_EXEC_PERM, 6, 101),
        _abi.Event(_abi.FAN_Q_OVERFLOW, -1, 0),
    ]


def test_info_records_after_the_metadata_are_skipped_by_event_len() -> None:
    data = _event(5, 100, extra=b"\x04\x00\x08\x00\x09\x00\x00\x00") + _event(6, 101)
    assert [e.fd for e in _abi.parse_events(data)] == [5, 6]


def test_an_empty_read_has_no_events() -> None:
    assert _abi.parse_events(b"") == []


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        (_event(5, 1, vers=2), "version 2"),
        (_event(5, 1, vers=4), "version 4"),
        (_abi.METADATA.pack(48, 3, 0, 24, 0, 5, 1), "malformed"),
        (_abi.METADATA.pack(24, 3, 0, 16, 0, 5, 1), "malformed"),
        (_abi.METADATA.pack(20, 3, 0, 24, 0, 5, 1), "malformed"),
        (_event(5, 1) + b"\x00" * 7, "trailing"),
    ],
    ids=[
        "older-version",
        "newer-version",
        "event-past-buffer",
        "short-metadata",
        "short-event",
        "trailing-bytes",
    ],
)
def test_anything_but_version_3_events_that_add_up_is_refused(data: bytes, fault: str) -> None:
    with pytest.raises(AbiError, match=fault):
        _abi.parse_events(data)


def test_group_flags_ask_for_permission_events_an_unlimited_queue_and_close_on_exec() -> None:
    flags = _abi.GROUP_INIT_FLAGS
    assert flags & _abi.FAN_CLASS_CONTENT
    assert flags & _abi.FAN_UNLIMITED_QUEUE
    assert flags & _abi.FAN_CLOEXEC
    assert flags & _abi.FAN_NONBLOCK
