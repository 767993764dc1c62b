"""Wire formats shared by the agent and the hub. Pure: no I/O, no clocks, no sockets."""
