"""``edge-hub registry migrate``, ``registry check`` and ``registry prune-search``: the
handlers (the logic is :mod:`hub.registry.migrate`, :mod:`hub.registry.check` and the
registry's ``prune_search``).

Each handler takes the parsed arguments and returns the exit code: 0 done (and verified), 1
refused or a verification failed (the report says which device logs or table counts), 2 a
bad argument, 3 a registry that cannot be opened or reached. The attributes they read:

- ``migrate``: ``to`` (the destination: a ``postgresql://`` URL or a ``hub.db`` path),
  ``source_dir`` (``--from``: the hub directory whose ``hub.db`` is copied; default
  ``hub_dir``, the global ``--hub-dir``, else ``$EDGE_HUB_DIR``, else the current
  directory), ``chunk`` (rows per destination transaction,
  :func:`hub.cli.parsers.registry.chunk_arg`) and ``json``.
- ``check``: ``registry`` (the global ``--registry``: a ``postgresql://`` URL or a ``hub.db``
  path; default ``$EDGEGOV_REGISTRY``, else the hub directory's ``hub.db``), ``source_dir``
  (``--from``, default ``hub_dir`` as for ``migrate``), ``sample`` (check that many device
  logs at random, ``None``: all) and ``json``.

- ``prune-search``: ``registry`` (as for ``check``), ``older_than`` (days,
  :func:`hub.cli.parsers.registry.days_arg`), ``yes`` (prune; without it only count) and
  ``json``. The cut is the start of the month holding the instant ``older_than`` days ago
  (:func:`hub.registry.search_months.retention_cut`): whole months go, on both backends.
  A cut after the start of an active rollout is refused (its stages are judged on the
  search rows since it began).

``migrate`` refuses ``--registry``: its source is always a hub directory's ``hub.db``.
A migration reads the source while no hub writes to it: it refuses a hub directory whose
``edge-hub serve`` runs (its ``serve.json``, or its ``serve.lock`` held), and holds that
lock while it copies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

from edge_agent.errors import ConfigError
from edge_agent.support.cli import utc_text
from hub.cli.exits import counted
from hub.hubdir.layout import HubDir, redacted
from hub.hubdir.paths import SERVE_LOCK_FILE, hub_dir_path
from hub.registry import Registry, RegistryError
from hub.registry.backends import open_registry, open_tables
from hub.registry.check import RegistryCheck, check_registry
from hub.registry.migrate import MAX_CHUNK_ROWS, MigrationError, MigrationReport, migrate_registry
from hub.registry.retention import PruneRefused, SearchPrune
from hub.registry.search_months import retention_cut

__all__ = ["cmd_registry_check", "cmd_registry_migrate", "cmd_registry_prune_search"]


def cmd_registry_migrate(args: argparse.Namespace) -> int:
    with _passwords_cut():
        return _migrate(args)


def cmd_registry_check(args: argparse.Namespace) -> int:
    with _passwords_cut():
        return _check(args)


def cmd_registry_prune_search(args: argparse.Namespace) -> int:
    with _passwords_cut():
        return _prune_search(args)


@contextlib.contextmanager
def _passwords_cut() -> Iterator[None]:
    """A registry error leaves with any password of a URL it quotes cut out."""
    try:
        yield
    except RegistryError as exc:
        exc.args = (redacted(exc.message),)
        raise


def _migrate(args: argparse.Namespace) -> int:
    if not 1 <= args.chunk <= MAX_CHUNK_ROWS:
        raise ConfigError(f"--chunk must be 1 to {MAX_CHUNK_ROWS} rows, not {args.chunk}")
    if getattr(args, "registry", None) is not None:
        raise ConfigError(
            "registry migrate copies the hub.db of --from (else --hub-dir): leave out "
            "--registry, and name the destination with --to"
        )
    hub = HubDir(hub_dir_path(_source_dir(args)))
    hub.open_registry(create=False).close()
    lock = hub.path / SERVE_LOCK_FILE
    lock_was_there = lock.exists()
    with hub.serve_file_claim() as claimed:
        info = hub.read_serve_info()
        if not claimed or info is not None:
            serving = "" if info is None or info.registry is None else f" (on {info.registry})"
            raise MigrationError(
                f"an edge-hub serve runs on {hub.path}{serving}: stop every hub using its "
                "registry before copying it (rows written during the copy would be lost)",
                code="hub_running",
            )
        try:
            report = migrate_registry(hub.registry_path, args.to, chunk=args.chunk)
        except BaseException:
            if not lock_was_there:
                # Refused (a bad --to among others): the hub directory is left as it was.
                lock.unlink(missing_ok=True)
            raise
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True))
    else:
        _print_migration(report)
    return 0 if report.check.ok else 1


def _existing_registry(args: argparse.Namespace) -> HubDir:
    """The hub directory ``args`` name, refused (``RegistryError``) unless its registry is
    there: opening creates one where there is none, so a mistyped ``--registry`` would be
    answered from a registry made for it."""
    hub = HubDir.resolve(_source_dir(args), args.registry)
    if hub.registry is None:
        hub.open_registry(create=False).close()
    else:
        hub.refuse_unless_hub_directory(reading=True)
    with open_tables(hub.registry_location, write=False) as rows:
        if rows.schema_version() is None:
            raise RegistryError(f"{rows.where} holds no hub registry (check --registry or --from)")
    return hub


def _check(args: argparse.Namespace) -> int:
    location = _existing_registry(args).registry_location
    with open_tables(location, write=False) as rows, open_registry(location) as registry:
        check = check_registry(registry, rows, sample=args.sample)
    if args.json:
        print(json.dumps(check.to_json(), sort_keys=True))
    else:
        _print_check(check)
    return 0 if check.ok else 1


def _prune_search(args: argparse.Namespace) -> int:
    now = int(time.time())
    cut = retention_cut(now, args.older_than)
    hub = _existing_registry(args)
    with open_registry(hub.registry_location) as registry:
        _refuse_active_rollouts(registry, cut)
        prune = registry.prune_search(cut, at=now, dry_run=not args.yes)
    where = redacted(str(hub.registry_location))
    if args.json:
        print(json.dumps(_prune_json(where, prune), sort_keys=True))
    else:
        _print_prune(where, prune)
    return 0


def _refuse_active_rollouts(registry: Registry, cut: int) -> None:
    """Refuse a cut after the start of an active rollout: its stages are judged on the
    search rows since it began (``lineage_tallies``)."""
    started = [r for r in registry.rollouts(active=True) if r.created_at < cut]
    if started:
        first = started[0]
        raise PruneRefused(
            f"rollout {first.rollout_id} ({first.state}) began on "
            f"{utc_text(first.created_at, '%Y-%m-%d')}, before the cut "
            f"{utc_text(cut, '%Y-%m-%d')}: the prune would drop search rows its stages are "
            "judged on; finish or abort it first, or keep more days (--older-than)"
        )


def _prune_json(where: str, prune: SearchPrune) -> dict[str, object]:
    return {
        "registry": where,
        "dry_run": prune.dry_run,
        "cut": prune.cut,
        "before": utc_text(prune.cut, "%Y-%m-%d"),
        "months_dropped": list(prune.months),
        "month_rows": prune.month_rows,
        "rows_deleted": prune.rows,
        "previous_cut": prune.previous_cut,
    }


def _print_prune(where: str, prune: SearchPrune) -> None:
    before = utc_text(prune.cut, "%Y-%m-%d")
    months = (
        f"{counted(len(prune.months), 'month partition')} ({', '.join(prune.months)}) holding "
        f"{counted(prune.month_rows, 'row')}, and "
        if prune.months
        else ""
    )
    rows = counted(prune.rows, "row")
    if prune.dry_run:
        print(
            f"would prune the lineage search of {where} before {before}: {months}{rows} "
            "to delete in chunks; nothing changed (add --yes to prune)"
        )
    else:
        print(f"pruned the lineage search of {where} before {before}: {months}{rows} deleted")
    if prune.previous_cut is not None and prune.previous_cut > prune.cut:
        print(
            "the retention cut stays at "
            f"{utc_text(prune.previous_cut, '%Y-%m-%d')} (an earlier prune kept less)"
        )
    print("device logs (entries, checkpoints, tree nodes) are kept whole")


def _source_dir(args: argparse.Namespace) -> Path | None:
    """``--from``, else the global ``--hub-dir``."""
    source: Path | None = args.source_dir or getattr(args, "hub_dir", None)
    return source


def _print_migration(report: MigrationReport) -> None:
    copy = report.copy
    if copy.already_migrated:
        print(
            f"already migrated: {counted(copy.rows, 'row')} in {counted(copy.tables, 'table')} "
            f"match at {report.destination} (nothing written)"
        )
    else:
        resumed = (
            f", resumed after {counted(copy.matched, 'row')} there already" if copy.matched else ""
        )
        print(
            f"copied {counted(copy.copied, 'row')} of {counted(copy.tables, 'table')} from "
            f"{report.source} to {report.destination}{resumed}"
        )
    _print_check(report.check)


def _print_check(check: RegistryCheck) -> None:
    print(f"registry {check.where}: schema {check.schema_version}")
    width = max(len(count.table) for count in check.tables)
    for count in check.tables:
        source = "" if count.source_rows is None else f"  (source {count.source_rows})"
        mark = "" if count.matches else "  MISMATCH"
        print(f"  {count.table:<{width}}  {count.rows:>10}{source}{mark}")
    print(
        f"device logs: {check.checked} of {check.logs} checked, "
        + ("all verify" if not check.failed else f"{check.failed} FAIL verification")
    )
    for failure in check.failures:
        print(f"  FAIL {failure.device} (size {failure.size}): {failure.problem}")
    if check.failed > len(check.failures):
        print(f"  ... and {check.failed - len(check.failures)} more")
    for channel in check.channels:
        print(
            f"UNPUBLISHABLE channels row: region {channel.region!r}, channel "
            f"{channel.channel!r}: {channel.problem} (the schedule skips it)"
        )
    _print_layout(check)


def _print_layout(check: RegistryCheck) -> None:
    print("lineage tables:")
    for table in check.layout:
        if table.partitioned is None:
            print(f"  {table.table}: one table (not partitioned)")
        elif table.partitioned == "device":
            print(f"  {table.table}: {counted(table.partitions, 'hash partition')} by device")
        else:
            months = f"{table.months[0]} to {table.months[-1]}" if table.months else "none"
            print(
                f"  {table.table}: partitioned by month, {counted(len(table.months), 'month')} "
                f"({months}) and a default partition holding "
                f"{counted(table.default_rows or 0, 'row')}"
            )
    if check.search_retention is None:
        print("lineage search retention: never pruned (every stored entry is searchable)")
    else:
        print(
            "lineage search retention: entries before "
            f"{utc_text(check.search_retention, '%Y-%m-%d')} are not searched (pruned; "
            "their device logs keep them)"
        )
