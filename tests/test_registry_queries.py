"""The shared query layer's rendering of one statement for each backend's driver."""

from __future__ import annotations

from hub.registry.queries.base import render

STATEMENT = (
    "SELECT sum(n)::bigint FROM t WHERE a = ? AND b = :now - seen AND c LIKE 'x/%' AND d = :stale_s"
)


def test_sqlite_reads_the_statement_as_written() -> None:
    assert render(STATEMENT, "sqlite") is STATEMENT


def test_postgresql_gets_psycopg_placeholders_and_keeps_casts_and_literal_percents() -> None:
    assert render(STATEMENT, "postgresql") == (
        "SELECT sum(n)::bigint FROM t WHERE a = %s AND b = %(now)s - seen "
        "AND c LIKE 'x/%%' AND d = %(stale_s)s"
    )
