"""System tools the tests drive for real, and what a test does when one is missing.

``scripts/install-system-deps.sh`` installs them (``make test`` runs it before anything
else: with apt-get as root, otherwise it names the packages on one line). A test that needs
a tool asks here first:

- on a developer's machine a missing tool makes the test SKIPPED, with the Debian package
  to install as the reason: never failed for want of a package, never passed without running;
- under CI (``CI=true``, which ``.ci/run`` sets) the same test FAILS: CI installs every
  package, so a missing tool means a broken CI image, and a green run with the broker tests
  skipped would hide it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
from typing import NoReturn

import pytest

__all__ = ["ctrl_c_default", "missing", "require", "require_module", "under_ci"]

CI_VALUES = frozenset({"true", "1", "yes"})


def under_ci() -> bool:
    """True when the ``CI`` environment variable says this is a CI run."""
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def missing(what: str, package: str, then: str = "") -> NoReturn:
    """Skip the calling test because ``what`` is not installed (fail it under CI).

    ``package`` is what to ``apt-get install``; ``then`` is any step after that.
    """
    reason = f"{what} is not installed (apt-get install {package}{then})"
    if under_ci():
        pytest.fail(f"{reason}; under CI every tool the tests drive must be there", pytrace=False)
    pytest.skip(reason)


def require(command: str, package: str, *, path: str | None = None) -> str:
    """The path of ``command`` (looked up on ``path``, default ``PATH``), or skip/fail."""
    found = shutil.which(command, path=path)
    if found is None:
        missing(command, package)
    return found


def require_module(module: str, package: str, then: str) -> None:
    """Skip/fail unless the Python ``module`` (built against ``package``) is importable."""
    if importlib.util.find_spec(module) is None:
        missing(module, package, then)


def ctrl_c_default() -> None:
    """For ``subprocess.Popen(preexec_fn=...)`` of a child a test stops with SIGINT: the
    child takes Ctrl-C as a terminal's foreground job does even when the test run was
    started as a background job of a non-interactive shell, which begins with SIGINT
    ignored (POSIX) and passes that on through ``exec`` (Python then installs no
    ``KeyboardInterrupt``, and the child never stops)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
