"""The governance console: the hub's web face (docs/console.md).

Server-rendered pages (Starlette + Jinja2, htmx for live refresh) served by ``edge-hub serve
--console`` on the hub's own event loop. :func:`hub.console.app.create_app` builds the
application from a :class:`hub.console.context.ConsoleContext`; each page module (dashboard,
devices, lineage, proof, actions, audit) declares its routes in a ``ROUTES`` list.
"""
