#!/usr/bin/env bash
# Build the self-contained edge agent for this machine's architecture:
#   dist/edge-agent/                      PyInstaller onedir build (packaging/edge-agent.spec)
#   dist/edge-agent_<version>_<arch>.deb  the Debian package (packaging/make-deb.sh)
#   build/cli-docs-deb/                   edge-agent's and edge-verify's shell completion and man
#                                         pages (scripts/gen_cli_docs.py), which the .deb ships
#
# Sets itself up from nothing: a build venv (build/venv) holding only the agent's runtime
# dependencies, read from pyproject.toml, and the pinned PyInstaller of
# packaging/requirements-build.txt, so nothing from the hub or the test tools can leak into the
# binary (shtab, which generates the completion scripts, is a build tool there). When nothing
# that goes into the build changed since the last one (a fingerprint of the sources, the
# packaging files and the build venv), the existing build is kept.
#
# Needs: a Python 3.11+ built with a shared libpython (Debian's python3.11 with python3.11-venv,
# or pyenv's), strip (binutils) and dpkg-deb. The binary runs on glibc no older than this
# machine's and on its CPU architecture only: packaging/foreign-arch.sh runs this script inside an
# arm64 or armhf Debian userland under emulation (`make package ARCH=arm64`, docs/deploy.md).
# PYTHON selects the interpreter; FORCE=1 rebuilds regardless of the fingerprint.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV="$ROOT/build/venv"
FINGERPRINT="$ROOT/build/edge-agent.fingerprint"
BINARY="$ROOT/dist/edge-agent/edge-agent"
CLI_DOCS="$ROOT/build/cli-docs-deb"

runtime_requirements() {
    "$PYTHON" -c 'import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))'
}

setup_venv() {
    local requirements want have=""
    requirements="$(runtime_requirements)"
    want="$({
        "$PYTHON" --version
        echo "$requirements"
        cat packaging/requirements-build.txt
    } | sha256sum | cut -d' ' -f1)"
    [[ -f "$VENV/.stamp" ]] && have="$(cat "$VENV/.stamp")"
    [[ "$want" == "$have" && -x "$VENV/bin/python" ]] && return
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    echo "$requirements" >"$VENV/runtime-requirements.txt"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        -r "$VENV/runtime-requirements.txt" -r packaging/requirements-build.txt
    echo "$want" >"$VENV/.stamp"
}

fingerprint() {
    {
        "$VENV/bin/python" --version
        "$VENV/bin/pip" freeze --disable-pip-version-check
        find edge_agent packaging systemd firmware_profiles docs/deploy.md pyproject.toml \
            scripts/gen_cli_docs.py \
            -type f ! -name '*.pyc' ! -path '*/__pycache__/*' 2>/dev/null | LC_ALL=C sort |
            xargs sha256sum
    } | sha256sum | cut -d' ' -f1
}

build_binary() {
    rm -rf dist/edge-agent build/pyinstaller
    "$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
        --distpath dist --workpath build/pyinstaller packaging/edge-agent.spec
    "$BINARY" --version >/dev/null
    "$ROOT/dist/edge-agent/edge-agent-exec" --help >/dev/null
}

# From the agent's own parsers, with the build venv (the agent's runtime set: edge-hub's pages
# are not made here, the package does not ship edge-hub). The pages' date is the last commit's,
# so a rebuild of the same sources makes the same bytes.
build_cli_docs() {
    rm -rf "$CLI_DOCS"
    SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}" \
        PYTHONPATH="$ROOT" "$VENV/bin/python" scripts/gen_cli_docs.py --out "$CLI_DOCS" \
        edge-agent edge-verify >/dev/null
}

require_tools() {
    local tool missing=()
    for tool in strip dpkg-deb dpkg-query; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        echo "build: missing ${missing[*]} (apt-get install binutils dpkg)" >&2
        exit 1
    fi
}

main() {
    local start=$SECONDS want
    require_tools
    # Only this architecture's package: dist/ also holds those built for others (foreign-arch.sh).
    DEB_GLOB="dist/edge-agent_*_$(dpkg --print-architecture).deb"
    mkdir -p build dist
    setup_venv
    want="$(fingerprint)"
    if [[ "${FORCE:-0}" != 1 && -x "$BINARY" && -f "$FINGERPRINT" ]] &&
        [[ "$(cat "$FINGERPRINT")" == "$want" ]] &&
        compgen -G "$DEB_GLOB" >/dev/null; then
        echo "build: dist/edge-agent is up to date"
        return
    fi
    rm -f "$FINGERPRINT" $DEB_GLOB
    build_binary
    build_cli_docs
    packaging/make-deb.sh
    echo "$want" >"$FINGERPRINT"
    echo "build: dist/edge-agent ($(du -sh dist/edge-agent | cut -f1)) and" \
        "$(ls $DEB_GLOB) in $((SECONDS - start)) s"
}

main "$@"
