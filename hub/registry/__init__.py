"""The hub's registry: typed records (:mod:`.records`) behind one interface
(:mod:`.interface`), with backends (:mod:`.sqlite`) opened in one place (:mod:`.backends`).

This package's top level re-exports the contract only (records, the
:class:`~hub.registry.interface.Registry` protocol, its error and constants): importing it
imports no database library.
"""

from hub.registry.interface import (
    AUDIT_OUTCOMES,
    FLEET_EXAMPLES,
    MAX_AUDIT_PAGE,
    MAX_AUDIT_TEXT,
    MAX_FORK_EVIDENCE,
    MAX_REJECTION_DETAIL,
    MAX_STATUS_SPANS,
    STATUS_SPAN_JOIN_S,
    UNREGISTERED,
    Registry,
    RegistryError,
)
from hub.registry.records import (
    AttestationRecord,
    AuditEntry,
    ConsoleFleetRow,
    ConsoleToken,
    DeviceRecord,
    FleetCount,
    FleetRow,
    FleetSummary,
    IssuedDirectory,
    IssuedFreshness,
    IssuedRevocation,
    PublishedBundle,
    RejectionCount,
    RejectionTotal,
    RolloutCount,
    ScheduleLeaseHolder,
    StatusSpan,
    StoredCheckpoint,
    StoredEntry,
)

__all__ = [
    "AUDIT_OUTCOMES",
    "FLEET_EXAMPLES",
    "MAX_AUDIT_PAGE",
    "MAX_AUDIT_TEXT",
    "MAX_FORK_EVIDENCE",
    "MAX_REJECTION_DETAIL",
    "MAX_STATUS_SPANS",
    "STATUS_SPAN_JOIN_S",
    "UNREGISTERED",
    "AttestationRecord",
    "AuditEntry",
    "ConsoleFleetRow",
    "ConsoleToken",
    "DeviceRecord",
    "FleetCount",
    "FleetRow",
    "FleetSummary",
    "IssuedDirectory",
    "IssuedFreshness",
    "IssuedRevocation",
    "PublishedBundle",
    "Registry",
    "RegistryError",
    "RejectionCount",
    "RejectionTotal",
    "RolloutCount",
    "ScheduleLeaseHolder",
    "StatusSpan",
    "StoredCheckpoint",
    "StoredEntry",
]
