"""The agent's MQTT sync with its hub: ``agent.toml`` (``config``), the daemon that keeps the
device in sync (``daemon``) and ``edge-agent run`` (``cli``). The MQTT connection itself, the
only place aiomqtt is imported, is public support: :mod:`edge_agent.support.mqtt`."""
