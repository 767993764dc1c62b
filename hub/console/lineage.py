"""The lineage explorer: search the fleet's shipped entries, export what matched, and open
one decision with its checkpoint and receipt.

- ``GET /lineage``: the search form and one page of hits, newest first
  (:mod:`hub.console.lineage_query` reads the query string; the registry's keyset pages,
  :meth:`hub.registry.interface.Registry.search_lineage`). The next page is a link carrying
  the cursor, so every page is a URL that can be shared.
- ``GET /lineage/export.jsonl``: every hit of the search, one JSON object per line.
- ``GET /lineage/export.cbor``: the lineage export format (``edge-hub lineage verify`` and
  ``edge_agent.protocol.lineage_export`` read it) of the one device the search names. That
  format proves a contiguous run of a log ending at a signed checkpoint, so it holds the
  device's entries from the first hit to the first checkpoint after the last hit: the
  filtered set and the entries between them, each verifiable with the device key alone.
- ``GET /lineage/{device}/{seq}``: one entry decoded (request, selectors, rule, reason,
  detail, bundle), the newest checkpoint covering it that the hub cosigned, and its receipt
  (``/receipt?format=cose|tlog-proof``: built by :func:`hub.core.receipts.hub_receipt`,
  what ``edge-hub lineage receipt`` writes), with a link that opens it in the proof viewer.

Every page needs the viewer role. A search that is not valid is shown with every problem
named, and nothing is read from the registry for it. A search reaching before the lineage
search's retention cut (``edge-hub registry prune-search``) says so above its hits: the
entries before it are not searched, not absent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, replace
from functools import partial
from itertools import islice
from typing import TypeVar
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from edge_agent.errors import ConfigError, LineageError
from edge_agent.protocol.checkpoint import origin_for
from edge_agent.protocol.keys import PublicKey
from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.protocol.lineage_entries import GENESIS_PREV, decode_entry
from edge_agent.protocol.lineage_export import ExportHeader, encode_header, frame_item
from edge_agent.protocol.merkle import Frontier, leaf_hash
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import TrustRoot
from hub.console.auth import console_context, require_viewer
from hub.console.context import ConsoleContext
from hub.console.errors import BadRequest, ConsoleError, NotFound
from hub.console.lineage_query import (
    Search,
    SearchError,
    form_values,
    parse_search,
    search_url,
)
from hub.console.query import check_params
from hub.console.render import render
from hub.core.receipts import FORMATS, CosignedCheckpoint, cosigned_checkpoint, hub_receipt
from hub.registry import DeviceRecord, Registry, RegistryError
from hub.registry.lineage_records import LineageHit, LineageQuery

__all__ = [
    "ROUTES",
    "NoReceiptYet",
    "console_receipt",
    "export_range",
    "hit_json",
    "witness_keys",
]

T = TypeVar("T")

_EXPORT_CHUNK_ROWS = 500
"""Hits (or entries) sent per chunk of a streamed export."""
_SUFFIX = {"cose": "receipt", "tlog-proof": "tlog-proof"}
_MEDIA = {"cose": "application/cose", "tlog-proof": "text/plain; charset=utf-8"}


async def search_page(request: Request) -> Response:
    """The search form and one page of what it matches."""
    require_viewer(request)
    context = console_context(request)
    try:
        search = parse_search(request.query_params.multi_items())
    except SearchError as exc:
        raw = {name: value[:256] for name, value in request.query_params.items()}
        return render(request, "lineage.html", {"form": raw, "problems": exc.problems}, status=400)
    page = await context.db(
        context.registry.search_lineage, search.query, after=search.after, limit=search.rows
    )
    first = replace(search, after=None)
    return render(
        request,
        "lineage.html",
        {
            "form": form_values(search),
            "problems": (),
            "hits": page.hits,
            "past_retention": page.past_retention,
            "first_url": search_url("/lineage", first) if search.after else None,
            "next_url": search_url("/lineage", replace(search, after=page.next))
            if page.next
            else None,
            "jsonl_url": search_url("/lineage/export.jsonl", first),
            "cbor_url": search_url("/lineage/export.cbor", first) if search.query.device else None,
        },
    )


async def export_jsonl(request: Request) -> Response:
    """Every hit of the search (whatever its page), one JSON object per line."""
    require_viewer(request)
    context = console_context(request)
    query = _export_query(request)

    async def lines() -> AsyncIterator[bytes]:
        async for hits in _chunks(context, partial(context.registry.iter_lineage, query)):
            text = "\n".join(json.dumps(hit_json(hit), sort_keys=True) for hit in hits)
            yield (text + "\n").encode("utf-8")

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"content-disposition": 'attachment; filename="lineage.jsonl"'},
    )


async def export_cbor(request: Request) -> Response:
    """The lineage export of the searched device, from its first hit to the first signed
    checkpoint at or after its last hit."""
    require_viewer(request)
    context = console_context(request)
    registry = context.registry
    query = _export_query(request)
    if query.device is None:
        raise BadRequest(
            "the lineage export format holds one device's log: add a device to the search "
            "(or export JSONL, which holds every device's hits)"
        )
    device = await context.db(_device, registry, query.device)
    header = await context.db(export_range, registry, device, query)
    if header is None:
        raise NotFound("nothing the hub holds matches this search: there is nothing to export")

    async def items() -> AsyncIterator[bytes]:
        yield frame_item(encode_header(header))
        async for entries in _chunks(
            context, partial(registry.iter_entries, device.device_id, header.start)
        ):
            held = [frame_item(e.data) for e in entries if e.seq < header.size]
            yield b"".join(held)
            if len(held) < len(entries):
                return

    name = quote(device.device_id, safe="")
    return StreamingResponse(
        items(),
        media_type="application/cbor-seq",
        headers={
            "content-disposition": f'attachment; filename="{name}-{header.start}-'
            f'{header.size}.lineage"'
        },
    )


def export_range(
    registry: Registry, device: DeviceRecord, query: LineageQuery
) -> ExportHeader | None:
    """The export header of ``device``'s log from the first hit of ``query`` to the first
    checkpoint the hub holds at or after the last hit's end; ``None`` when nothing matches.

    Raises:
        RegistryError: unreadable, or no checkpoint covers a stored entry (damage: every
            stored batch ends in one).
    """
    seqs = [hit.seq for hit in registry.iter_lineage(replace(query, device=device.device_id))]
    if not seqs:
        return None
    start, last = min(seqs), max(seqs)
    held = sorted(
        (c for c in registry.iter_checkpoints(device.device_id, min_size=start) if c.note),
        key=lambda c: c.size,
    )
    end = next((c.size for c in held if c.size > last), None)
    if end is None:
        raise RegistryError(
            f"the hub holds no checkpoint of {device.device_id} covering entry {last}: the "
            "registry is damaged (every stored batch ends in one)"
        )
    nodes = registry.tree_nodes(device.device_id)
    prev = (
        GENESIS_PREV
        if start == 0
        else leaf_hash(registry.entries(device.device_id, start - 1, start)[0])
    )
    return ExportHeader(
        origin=origin_for(device.device_id, device.key_epoch),
        start=start,
        prev=prev,
        frontier=Frontier.load(start, nodes).hashes,
        size=end,
        checkpoints=tuple(c.note for c in held if c.size <= end),
    )


def hit_json(hit: LineageHit) -> dict[str, object]:
    """One hit as the JSONL export writes it (``allowed`` also as ``verdict``)."""
    document: dict[str, object] = asdict(hit)
    document["verdict"] = "allow" if hit.allowed else "deny"
    return document


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    """The checkpoint a decision page shows: the cosigned one, or why there is none."""

    held: CosignedCheckpoint | None
    missing: str


async def decision_page(request: Request) -> Response:
    """One shipped entry: what was asked and decided, where it is in the log, its receipt."""
    require_viewer(request)
    check_params(request, ())
    context = console_context(request)
    device, seq, data = await context.db(
        _entry, context, request.path_params["device"], request.path_params["seq"]
    )
    try:
        entry = decode_entry(data, seq)
    except LineageError as exc:
        raise ConsoleError(f"the hub's copy of entry {seq} is damaged: {exc}") from exc
    keys = context.keys()
    checkpoint = await context.db(_covering, context.registry, device, witness_keys(keys.root), seq)
    bundle_held = entry.bundle_digest is not None and (
        await context.db(context.registry.bundle_data, entry.bundle_digest) is not None
    )
    base = f"/lineage/{quote(device.device_id, safe='')}/{seq}"
    proof_query = urlencode({"device": device.device_id, "seq": str(seq)})
    return render(
        request,
        "lineage_entry.html",
        {
            "device": device,
            "entry": entry,
            "entry_hex": data.hex(),
            "leaf": leaf_hash(data).hex(),
            "checkpoint": checkpoint,
            "bundle_held": bundle_held,
            "receipt_urls": {fmt: f"{base}/receipt?format={fmt}" for fmt in FORMATS},
            "proof_url": f"/proof?{proof_query}",
            "search_url": search_url("/lineage", Search(LineageQuery(device=device.device_id))),
        },
    )


async def receipt_download(request: Request) -> Response:
    """The entry's receipt as a file, built as ``edge-hub lineage receipt`` builds it."""
    require_viewer(request)
    context = console_context(request)
    check_params(request, ("format",))
    device, seq, _ = await context.db(
        _entry, context, request.path_params["device"], request.path_params["seq"]
    )
    fmt = request.query_params.get("format", "cose")
    if fmt not in FORMATS:
        raise BadRequest(f"format is one of {', '.join(FORMATS)}")
    data = await context.db(console_receipt, context, device.device_id, seq, fmt)
    name = f"{quote(device.device_id, safe='')}-{seq}.{_SUFFIX[fmt]}"
    return Response(
        data,
        media_type=_MEDIA[fmt],
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


class NoReceiptYet(ConsoleError):
    """The hub cannot make this receipt yet (no cosigned checkpoint covers the entry, or it
    holds no witness key)."""

    status = 409
    title = "No receipt yet"


def console_receipt(context: ConsoleContext, device_id: str, seq: int, fmt: str) -> bytes:
    """The receipt of ``device_id``'s entry ``seq`` in ``fmt``, signed by the hub's witness
    key now (:func:`hub.core.receipts.hub_receipt`, as ``edge-hub lineage receipt``).

    Raises:
        NotFound: unknown device or entry not shipped.
        NoReceiptYet: no cosigned checkpoint covers it, or the hub holds no witness key.
    """
    keys = context.keys()
    if keys.witness is None:
        raise NoReceiptYet(
            "this hub holds no witness key (the verifier role key of its trust root): it "
            "cosigns no checkpoint and makes no receipt"
        )
    try:
        data, _ = hub_receipt(
            context.registry,
            device_id,
            seq,
            witness=keys.witness,
            witnesses=witness_keys(keys.root),
            now=context.clock(),
            fmt=fmt,
        )
    except ConfigError as exc:
        raise NotFound(str(exc)) from exc
    except LineageError as exc:
        raise NoReceiptYet(str(exc)) from exc
    return data


def witness_keys(root: TrustRoot) -> tuple[PublicKey, ...]:
    """The witness keys of ``root``: its verifier role keys (docs/receipts.md)."""
    return tuple(root.role(Role.VERIFIER).keys.values())


def _export_query(request: Request) -> LineageQuery:
    try:
        return parse_search(request.query_params.multi_items()).query
    except SearchError as exc:
        raise BadRequest("; ".join(exc.problems)) from exc


def _device(registry: Registry, device_id: str) -> DeviceRecord:
    device = registry.device(device_id)
    if device is None:
        raise NotFound(f"no device {device_id!r} is registered")
    return device


async def _chunks(
    context: ConsoleContext, read: Callable[[], Iterator[T]]
) -> AsyncIterator[list[T]]:
    """What the registry iterator ``read`` makes, a chunk of ``_EXPORT_CHUNK_ROWS`` at a
    time, each read (and the iterator made) on the console's registry gateway worker."""
    items = await context.db(read)
    while chunk := await context.db(_take, items, _EXPORT_CHUNK_ROWS):
        yield chunk


def _take(items: Iterator[T], count: int) -> list[T]:
    return list(islice(items, count))


def _entry(context: ConsoleContext, device_id: str, text: str) -> tuple[DeviceRecord, int, bytes]:
    """The device, seq and stored entry the path names (read on the gateway's worker)."""
    registry = context.registry
    device = _device(registry, device_id)
    if not (text.isascii() and text.isdigit()):
        raise BadRequest(f"an entry's seq is a whole number, not {text[:40]!r}")
    seq = int(text)
    found = registry.entries(device.device_id, seq, seq + 1) if seq <= MAX_COUNTER else []
    if not found:
        size = registry.lineage_state(device.device_id).size
        held = f"it holds entries 0 to {size - 1}" if size else "it holds none yet"
        raise NotFound(
            f"entry {seq} of {device.device_id} has not been shipped to this hub ({held})"
        )
    return device, seq, found[0]


def _covering(
    registry: Registry, device: DeviceRecord, witnesses: tuple[PublicKey, ...], seq: int
) -> _Checkpoint:
    try:
        return _Checkpoint(cosigned_checkpoint(registry, device, witnesses, seq), "")
    except LineageError as exc:
        return _Checkpoint(None, exc.message)


ROUTES = [
    Route("/lineage", search_page, methods=["GET"], name="lineage"),
    Route("/lineage/export.jsonl", export_jsonl, methods=["GET"], name="lineage_jsonl"),
    Route("/lineage/export.cbor", export_cbor, methods=["GET"], name="lineage_export"),
    Route("/lineage/{device}/{seq}", decision_page, methods=["GET"], name="decision"),
    Route(
        "/lineage/{device}/{seq}/receipt",
        receipt_download,
        methods=["GET"],
        name="receipt",
    ),
]
