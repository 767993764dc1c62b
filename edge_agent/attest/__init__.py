"""Local attestation: firmware profiles, measurement providers, the measured state.

The agent measures the files and facts its firmware profile names (:mod:`.profile`,
:mod:`.measure`; a TPM 2.0's PCRs too when the profile has ``[tpm]``, :mod:`.tpm`), answers
the hub's challenges with signed evidence (:mod:`.responder`) and keeps the hub's signed
result (:mod:`edge_agent.agent`, :mod:`edge_agent.sync.daemon`). The pure parts (wire
formats, expectations, the local verdict against the installed bundle's expectations, the
gate check) live in :mod:`edge_agent.protocol.attestation`,
:mod:`edge_agent.protocol.expectations`, :mod:`edge_agent.trust.verdict` and
:mod:`edge_agent.trust.gate`; this package is the I/O shell that reads files and the system.
"""
