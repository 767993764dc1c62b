"""The one error tree of edgegov, split by cause.

Every error carries a machine-readable ``code`` and a message a field technician can act on.
Caller misuse (wrong types, impossible arguments) stays ``ValueError``/``TypeError``.
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "ClockError",
    "ConfigError",
    "EdgeGovError",
    "EnvelopeError",
    "LineageDamagedError",
    "LineageError",
    "PolicyError",
    "ReceiptError",
    "RootError",
    "StateError",
    "TransportError",
]


class EdgeGovError(Exception):
    """Base of every error edgegov raises on purpose."""

    code = "error"
    codes: tuple[str, ...] = ()
    """The other codes an instance of this class may carry (given as ``code=``): with
    :attr:`code`, every code a refusal of this kind can be recorded with (``edge-agent log
    show --reason`` knows them; a test checks each ``code=`` in the source is declared)."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class EnvelopeError(EdgeGovError):
    """A signed object is malformed, badly encoded, or its signatures do not verify."""

    code = "bad_envelope"


class BundleError(EnvelopeError):
    """A policy bundle was refused: format, signature, rollback, expiry or target."""

    code = "bundle_rejected"
    codes = (
        "bundle_conflict",
        "bundle_expired",
        "bundle_policy",
        "bundle_rollback",
        "bundle_signature",
        "bundle_superseded",
        "bundle_target",
        "bundle_threshold",
        "bundle_unauthorised",
    )


class RootError(EnvelopeError):
    """A trust root was refused: format, signatures, thresholds or version."""

    code = "root_rejected"
    codes = ("root_conflict", "root_expired", "root_gap", "root_rollback", "root_threshold")


class PolicyError(EdgeGovError):
    """A policy source is invalid; carries the file, line and rule at fault when known."""

    code = "policy_invalid"

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        rule: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.rule = rule
        where = ":".join(str(p) for p in (path, line) if p is not None)
        prefix = f"{where}: " if where else ""
        in_rule = f"rule {rule!r}: " if rule else ""
        super().__init__(f"{prefix}{in_rule}{message}")


class ClockError(EdgeGovError):
    """The local clock is below the trusted time floor; nothing time-bound can be decided."""

    code = "clock_untrusted"


class StateError(EdgeGovError):
    """The agent's state directory is missing, unreadable or inconsistent."""

    code = "state_error"


class ConfigError(EdgeGovError):
    """A configuration value or command-line argument is invalid."""

    code = "config_error"
    codes = ("out_in_state_dir",)


class LineageError(EdgeGovError):
    """The execution lineage cannot be verified: a Merkle proof, root, checkpoint or entry is
    malformed or does not match; carries the sequence number of the first bad entry when known.
    """

    code = "lineage_invalid"

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        self.seq = seq
        prefix = f"entry {seq}: " if seq is not None else ""
        super().__init__(f"{prefix}{message}")


class ReceiptError(LineageError):
    """A decision receipt or proof does not prove what it claims; ``step`` names the first
    check that failed (``entry``, ``inclusion_path``, ``root``, ``receipt_signature``,
    ``checkpoint_signature``, ``cosignature``, ``bundle``); ``held`` lists the (step,
    detail) pairs that held before it, for a verifier to print what was proven."""

    code = "receipt_invalid"

    def __init__(self, step: str, message: str, *, held: tuple[tuple[str, str], ...] = ()) -> None:
        self.step = step
        self.held = held
        super().__init__(message)


class ChainError(LineageError):
    """A chain of decisions (``edge-verify chain``) does not prove what it claims; ``link``
    names the link (0: the child the chain starts from; ``None``: the file or its
    directory), ``step`` the check that failed, and ``held`` the (step, detail) pairs that
    held before it, for a verifier to print what was proven."""

    code = "chain_invalid"

    def __init__(
        self,
        step: str,
        message: str,
        *,
        link: int | None = None,
        held: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.step = step
        self.link = link
        self.held = held
        super().__init__(message)


class LineageDamagedError(LineageError):
    """The lineage file is not an intact database any more (overwritten, zeroed, cut short
    in place): a break to record, unlike a passing failure such as a full disk or a lock."""

    code = "lineage_damaged"


class TransportError(EdgeGovError):
    """The broker cannot be reached or dropped the connection. Never decides trust: the
    agent keeps deciding from its installed bundle and reconnects."""

    code = "transport_error"
