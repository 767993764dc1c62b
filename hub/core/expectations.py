"""Attestation expectations as the operator reads and writes them: JSON with hex digests.

``edge-hub attest expect`` writes :func:`expectations_to_json`; ``edge-hub bundle build
--attestation FILE`` reads it back with :func:`expectations_from_json`, which parses exactly
as a bundle's CBOR ``attestation`` map is parsed
(:func:`~edge_agent.protocol.expectations.parse_expectations`), so a file the hub accepts is
one its devices accept.

Values in, values out: reading and writing the file is the CLI's (:mod:`hub.cli.main`,
:mod:`hub.cli.attest`).
"""

from __future__ import annotations

from collections.abc import Mapping

from edge_agent.protocol.expectations import Expectations, ExpectationsError, parse_expectations

__all__ = ["MAX_JSON_DEPTH", "expectations_from_json", "expectations_to_json"]

MAX_JSON_DEPTH = 8
"""Deepest nesting of JSON expectations accepted (the shape needs five levels)."""


def expectations_to_json(expectations: Expectations) -> dict[str, object]:
    """Expectations as JSON (hex digests): what ``edge-hub attest expect`` writes."""

    def allowed(values: Mapping[str, frozenset[bytes]]) -> dict[str, list[str]]:
        return {name: sorted(d.hex() for d in values[name]) for name in sorted(values)}

    profiles: dict[str, object] = {}
    for name, entry in sorted(expectations.profiles.items()):
        body: dict[str, object] = {"measurements": allowed(entry.measurements)}
        if entry.devices:
            body["devices"] = {d: allowed(v) for d, v in sorted(entry.devices.items())}
        profiles[name] = body
    return {"profiles": profiles}


def expectations_from_json(value: object) -> Expectations:
    """Parse JSON expectations (hex digests) as a bundle would carry them.

    Raises:
        ExpectationsError: not the expectations shape, nested deeper than
            ``MAX_JSON_DEPTH``, or a digest is not 64 hex digits.
    """

    def convert(node: object, depth: int) -> object:
        if depth > MAX_JSON_DEPTH:
            raise ExpectationsError("the expectations nest too deeply")
        if isinstance(node, dict):
            return {k: convert(v, depth + 1) for k, v in node.items()}
        if isinstance(node, list):
            return [_digest(item) for item in node]
        return node

    converted = convert(value, 0)
    if not isinstance(converted, dict):
        raise ExpectationsError("the expectations must be a JSON object")
    return parse_expectations(converted)


def _digest(text: object) -> bytes:
    if not isinstance(text, str) or len(text) != 64:
        raise ExpectationsError(f"{text!r} is not a SHA-256 digest (64 hex digits)")
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise ExpectationsError(f"{text!r} is not a SHA-256 digest (64 hex digits)") from exc
