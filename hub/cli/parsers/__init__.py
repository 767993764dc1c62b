"""The ``edge-hub`` parsers of each command family, apart from their handlers.

Each module adds its commands to the parser and names their handlers
(:class:`hub.cli.lazy.Handler`): building the parser, as every ``edge-hub`` command and the
help, completion and man pages do, imports none of the handler modules
(``tests/test_hub_cli_imports.py``).
"""
