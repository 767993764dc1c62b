"""Size, depth and count limits for everything read from outside, with their units.

Every limit is checked before or during parsing, never after a structure is built.
"""

from __future__ import annotations

__all__ = [
    "MAX_BREAK_GLASS_WINDOW_S",
    "MAX_BUNDLE_BYTES",
    "MAX_CBOR_DEPTH",
    "MAX_CBOR_ITEMS",
    "MAX_COUNTER",
    "MAX_HEADER_BYTES",
    "MAX_INT",
    "MAX_MESSAGE_BYTES",
    "MAX_PACKET_BYTES",
    "MAX_REVOCATION_BYTES",
    "MAX_ROOT_BYTES",
    "MAX_SIGNATURES",
    "MIN_INT",
    "SIGNED_TIME_SKEW_S",
]

MAX_BREAK_GLASS_WINDOW_S = 4 * 3600
"""Longest audit window one break-glass token opens (:mod:`edge_agent.protocol.breakglass`)."""
MAX_BUNDLE_BYTES = 2 * 1024 * 1024
"""The largest bundle anyone signs, pushes or accepts. A 10,000-rule bundle signed by one key
is 1,104,156 bytes (bench/decide.py's policy generator, compiled and signed): 2 MiB leaves
room for it, bounds memory on a gateway, and is the largest MQTT message edgegov sends."""

MAX_MESSAGE_BYTES = MAX_BUNDLE_BYTES
"""The largest payload of any MQTT message edgegov sends: a bundle (above); a lineage batch is
at most 1 MiB (``shipping.MAX_BATCH_BYTES``). The agent drops anything larger unread, the
embedded broker and the shipped Mosquitto config refuse it."""

MAX_PACKET_BYTES = MAX_MESSAGE_BYTES + 4096
"""A whole PUBLISH packet: the payload plus the fixed header, topic and packet id (edgegov
topics are at most 256 bytes). The shipped Mosquitto config's ``max_packet_size``."""

MAX_ROOT_BYTES = 64 * 1024
MAX_REVOCATION_BYTES = 64 * 1024
MAX_HEADER_BYTES = 1024
"""A COSE protected header holds an algorithm, a content type and perhaps a kid."""

MAX_CBOR_DEPTH = 16
"""Deepest nesting any edgegov payload needs (a bundle's policy conditions sit at depth 7)."""

MAX_CBOR_ITEMS = 2_000_000
"""Upper bound on data items in one decoded object (each item costs at least one byte)."""

MAX_SIGNATURES = 16
"""Signatures on one COSE_Sign object; more is refused before any is verified."""

MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
"""The integer range deterministic CBOR can carry at all (major types 0 and 1)."""

MAX_COUNTER = 2**53 - 1
"""Largest value of every counter field of a decoded object: versions, epochs, times (Unix
seconds), durations (seconds), sequence numbers, tree sizes and byte counts; the smallest is 0.

Why 2^53-1 and not the 2^64-1 CBOR allows: (1) both sides store these values in SQLite,
whose integers are signed 64-bit, so anything at or past 2^63 cannot even be stored; (2) the
sum of two bounded values (``issued_at + ttl``, ``hub_time + max_offline``) stays below 2^63;
(3) ``--json`` output and the console are read by JavaScript and jq, whose numbers are IEEE
doubles: 2^53-1 is the largest integer they hold exactly (``Number.MAX_SAFE_INTEGER``), so a
kill epoch or version never prints as a neighbouring value. It is no practical limit: as Unix
seconds it is 285 million years; as a counter bumped a million times a second, 285 years.
"""

SIGNED_TIME_SKEW_S = 300
"""Seconds a signer's clock may run ahead of this device's before decisions stop.

A bundle issued at T proves that it is at least T; the floor moves to T minus this skew, so a
hub a few minutes fast does not make freshly installed bundles deny until clocks meet. It is
also how far ahead of trusted time a bundle's ``issued_at`` may be (docs/trust.md), and so
how long before a bundle's ``issued_at`` a receipt's entry may be logged under it.
"""
