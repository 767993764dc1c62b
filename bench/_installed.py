"""A scratch non-editable install of a source tree, as a user gets it.

The development venv runs the tree through setuptools' editable-install finder (about 12-20 ms
of every start-up), and where ``PYTHONDONTWRITEBYTECODE`` is set it compiles the modules on
every start; start-up figures users compare are taken through this install instead: a wheel
built from a copy of the tree, installed with compiled modules into a venv of its own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["installed_copy"]

ROOT = Path(__file__).resolve().parents[1]


def installed_copy(temp: Path, tree: Path = ROOT) -> Path:
    """A scratch venv under ``temp`` holding a non-editable install of ``tree``; its python.

    The tree is copied first (building in place would leave build/ and egg-info in it); the
    runtime dependencies come from this venv through a path entry, so nothing is fetched but
    the build backend."""
    source = temp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(tree / name, source / name)
    for package in ("edge_agent", "hub"):
        shutil.copytree(
            tree / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    wheels, venv = temp / "wheels", temp / "venv"
    _quietly(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)]
    )
    _quietly([sys.executable, "-m", "venv", str(venv)])
    site = next(venv.glob("lib/python*/site-packages"))
    here = next(Path(sys.prefix).glob("lib/python*/site-packages"))
    (site / "zz-bench-dependencies.pth").write_text(f"{here}\n")
    wheel = next(wheels.glob("edgegov-*.whl"))
    _quietly([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--compile", str(wheel)])
    return venv / "bin" / "python"


def _quietly(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
