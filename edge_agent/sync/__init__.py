"""The agent's MQTT sync with its hub: broker settings, the MQTT adapter and the daemon."""
