"""The fail-closed gate: trust state + request + now -> decision. Pure: no I/O, no clocks."""
