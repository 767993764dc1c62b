"""The hub's registry: typed records (:mod:`.records`) behind one interface
(:mod:`.interface`), with backends (:mod:`.sqlite`) opened in one place (:mod:`.backends`).

This package's top level re-exports the contract only (records, the
:class:`~hub.registry.interface.Registry` protocol, its error and constants): importing it
imports no database library.
"""

from hub.registry.interface import (
    MAX_FORK_EVIDENCE,
    MAX_REJECTION_DETAIL,
    UNREGISTERED,
    Registry,
    RegistryError,
)
from hub.registry.records import (
    AttestationRecord,
    DeviceRecord,
    FleetRow,
    IssuedDirectory,
    IssuedFreshness,
    IssuedRevocation,
    PublishedBundle,
    RejectionCount,
    RejectionTotal,
    StoredCheckpoint,
    StoredEntry,
)

__all__ = [
    "MAX_FORK_EVIDENCE",
    "MAX_REJECTION_DETAIL",
    "UNREGISTERED",
    "AttestationRecord",
    "DeviceRecord",
    "FleetRow",
    "IssuedDirectory",
    "IssuedFreshness",
    "IssuedRevocation",
    "PublishedBundle",
    "Registry",
    "RegistryError",
    "RejectionCount",
    "RejectionTotal",
    "StoredCheckpoint",
    "StoredEntry",
]
