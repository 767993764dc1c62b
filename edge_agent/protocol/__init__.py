"""The shared pure core: everything the agent and the hub both read and write.

Deterministic CBOR (``dcbor``), COSE envelopes (``cose``), keys and signing roles, the trust
root, bundles (verification, targeting and admission, not the policy compiler), revocations,
freshness tokens, attestation objects and expectations, firmware profiles, break-glass
tokens, decision requests, lineage entries and export frames, Merkle proofs and checkpoints,
lineage shipping batches, MQTT topic names, and the size limits of each. Pure: no I/O, no
clocks, no sockets (the import contract in ``make check`` holds it); verification functions
take bytes and ``now`` and return a value or raise.
"""
