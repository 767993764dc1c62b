"""The SQLite registry's schema, rendered from :mod:`hub.registry.schema` (the one
definition both backends share): its version is SQLite's ``user_version``. Tables are
created when missing, so an older registry gains a table added since (``tpm_keys``,
``directory_versions``, ``lineage_nodes``: backfilled when opened, see :mod:`.tree_nodes`)
when it is opened; a column change needs a new version."""

from __future__ import annotations

from hub.registry.schema import SCHEMA_VERSION, SEARCH_TABLE, TABLES, create_statements

__all__ = ["SCHEMA", "SCHEMA_VERSION", "SEARCH_SCHEMA"]

SCHEMA = "".join(f"{statement};\n" for statement in create_statements("sqlite", TABLES))
"""Every table but the lineage search's, and their indexes."""

SEARCH_SCHEMA = "".join(
    f"{statement};\n" for statement in create_statements("sqlite", (SEARCH_TABLE,))
)
"""The lineage search table and its indexes (:mod:`.lineage_search`)."""
