"""The trust machine and the fail-closed gate. Pure: no I/O, no clocks.

- ``state``: the device's immutable trust state and its ``with_*`` transitions;
- ``machine``: one function per trust object (bundle, root, revocation, freshness token,
  attestation result, local measurement, clock and deadline observation) from (state,
  bytes, now) to an outcome the shell persists, logs and swaps in;
- ``restore``: the state read back from the store, verified again;
- ``clock``: trusted time (``trusted_now``, ``earliest_now``) and the time floor;
- ``verdict``: a local measurement judged against the bundle's expectations;
- ``breakglass``: what a verified break-glass token permits;
- ``gate``: trust state + request + now -> decision, one reason code per denial.
"""
