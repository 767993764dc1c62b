"""edgegov edge agent: enforces signed policy bundles locally and fails closed."""

__version__ = "0.1.0"
