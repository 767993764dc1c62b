"""The registry's queries, written once for both backends (as :mod:`hub.registry.schema`
writes its tables once): each module holds one concern's operations of
:class:`hub.registry.interface.Registry` over :class:`.base.RegistryQueries`, whose SQL
:func:`.base.render` puts in the backend's dialect. A backend supplies its connection,
transactions, locking and error mapping, and what truly differs between the databases.
"""
