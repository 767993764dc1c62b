#!/usr/bin/env bash
# Build the self-contained edge agent for a foreign CPU architecture on this machine, under
# qemu-user emulation: `packaging/foreign-arch.sh arm64` (or armhf) leaves
# dist/edge-agent_<version>_<arch>.deb, the same package as the host's but for that CPU.
#
# Sets itself up from nothing and caches everything under build/foreign/<arch>/:
#   - qemu-user-static, binfmt-support and debootstrap (apt-get, when missing);
#   - binfmt_misc mounted and the qemu-<cpu> handler enabled with the F flag, so the kernel
#     runs the target's binaries through the emulator even inside a chroot;
#   - rootfs/: a minimal Debian userland of the target architecture, debootstrap'd from the
#     Debian mirror for the host's own release (/etc/os-release), holding python3.11,
#     libpython3.11 (PyInstaller needs the shared libpython), binutils and CA certificates;
#   - rootfs/build/edgegov/: a copy of what goes into the build, where packaging/build.sh runs
#     inside the userland exactly as on a native machine (its build venv and fingerprint stay
#     there, so an unchanged tree is not rebuilt). pip inside it gets the host's CA bundle.
# Wheels for the target come from the registry as for the host; nothing a wheel provides is
# compiled. Needs root (debootstrap, chroot, mount); refuses with one line naming what is
# missing when this machine cannot run the target's binaries. DEBIAN_MIRROR overrides the
# mirror; FORCE=1 rebuilds regardless of the fingerprint.
#
# `packaging/foreign-arch.sh arm64 test-core tests/test_x.py ...` runs those test files inside
# the cached userland instead (`make test-arm-core`), with the target's CPython under
# emulation, in a venv of their own (rootfs/build/core-tests/venv: the runtime dependencies
# and the test extra of pyproject.toml, from the registry), never in the build venv, whose
# contents are part of the package's fingerprint.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
ARCH="${1:-}"
COMMAND="${2:-build}"
PACKAGES=python3.11,libpython3.11,python3.11-venv,ca-certificates,binutils
# armhf: PyPI has armv7l wheels for pydantic-core only, so PyNaCl, cffi and PyInstaller (its
# bootloader) compile inside the userland; PyNaCl links Debian's libsodium (SODIUM_INSTALL=system)
# rather than building its bundled copy under emulation. cbor2 6 is Rust: without an armv7l
# wheel it needs crates.io, which this machine cannot reach, so the armhf build refuses before
# setting anything up unless the registry has such a wheel (RUST_WHEELS, docs/deploy.md).
# WHEEL_CPU: the CPU in the target's wheel tags.
case "$ARCH" in
arm64) CPU=aarch64 BUILD_ENV="" RUST_WHEELS="" WHEEL_CPU=aarch64 ;;
armhf)
    CPU=arm BUILD_ENV="SODIUM_INSTALL=system" RUST_WHEELS=cbor2 WHEEL_CPU=armv7l
    PACKAGES+=,build-essential,python3.11-dev,libffi-dev,libsodium-dev,zlib1g-dev
    ;;
*)
    echo "foreign-arch: usage: packaging/foreign-arch.sh arm64|armhf [build|test-core FILES]" >&2
    exit 2
    ;;
esac
RELEASE="$(. /etc/os-release && echo "$VERSION_CODENAME")"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="$ROOT/build/foreign/$ARCH"
ROOTFS="$CACHE/rootfs"
WORK=/build/edgegov
HOST_CA=/etc/ssl/certs/host-ca-certificates.crt
CORE_WORK=/build/core-tests
# What packaging/build.sh fingerprints: everything that goes into the binary and the .deb.
SOURCES=(edge_agent packaging systemd firmware_profiles docs/deploy.md pyproject.toml
    scripts/gen_cli_docs.py)

refuse() {
    echo "foreign-arch: $*" >&2
    exit 1
}

install_tools() {
    local package missing=()
    for package in qemu-user-static binfmt-support debootstrap; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" ||
            missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
        refuse "cannot install ${missing[*]} with apt-get"
}

enable_emulation() {
    local handler=/proc/sys/fs/binfmt_misc/qemu-$CPU
    if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
            refuse "binfmt_misc is not available (mount -t binfmt_misc failed):" \
                "$ARCH binaries cannot run on this machine"
    fi
    [[ -e "$handler" ]] || update-binfmts --enable "qemu-$CPU" >/dev/null 2>&1 || true
    grep -qx enabled "$handler" 2>/dev/null && grep -q '^flags: .*F' "$handler" ||
        refuse "no enabled qemu-$CPU binfmt_misc handler with the F flag" \
            "(update-binfmts --enable qemu-$CPU): $ARCH binaries cannot run on this machine"
}

# What the userland takes from the host at every run: the CA bundle (pip behind this machine's
# TLS trust) and the resolver configuration.
host_files() {
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOTFS$HOST_CA"
    install -m 0644 /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
}

# A command string run as root inside the userland: in a private mount namespace (its /dev and
# /proc go away with it), with a clean environment and pip trusting the host's CA bundle.
in_userland() {
    unshare --mount --propagation private sh -c '
        set -e
        mount --rbind /dev "$1/dev"
        mount -t proc proc "$1/proc"
        exec chroot "$1" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
            DEBIAN_FRONTEND=noninteractive PIP_CERT="$2" PIP_DEFAULT_TIMEOUT=180 bash -c "$3"' \
        sh "$ROOTFS" "$HOST_CA" "$1"
}

# debootstrap lays a bare minbase (its resolver ignores Provides:, so python3.11-venv's
# dependency on python3.11-distutils would leave it unconfigured); apt inside the userland
# then installs the packages the build needs.
setup_rootfs() {
    local want have=""
    want="$(echo "$RELEASE $MIRROR $PACKAGES" | sha256sum | cut -d' ' -f1)"
    [[ -f "$CACHE/rootfs.stamp" ]] && have="$(cat "$CACHE/rootfs.stamp")"
    [[ "$want" == "$have" && -x "$ROOTFS/usr/bin/python3.11" ]] && return
    rm -rf "$ROOTFS" "$CACHE/rootfs.stamp"
    mkdir -p "$CACHE"
    echo "foreign-arch: debootstrap $RELEASE $ARCH into $ROOTFS (once; several minutes)"
    debootstrap --arch="$ARCH" --variant=minbase "$RELEASE" "$ROOTFS" "$MIRROR" \
        >"$CACHE/debootstrap.log" 2>&1 ||
        refuse "debootstrap of $RELEASE $ARCH failed; see $CACHE/debootstrap.log"
    host_files
    in_userland "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${PACKAGES//,/ }" \
        >"$CACHE/apt.log" 2>&1 ||
        refuse "installing ${PACKAGES//,/ } in the $ARCH userland failed; see $CACHE/apt.log"
    echo "$want" >"$CACHE/rootfs.stamp"
}

sync_sources() {
    local source
    mkdir -p "$ROOTFS$WORK"
    for source in "${SOURCES[@]}"; do
        rm -rf "${ROOTFS:?}$WORK/$source"
    done
    tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' -cf - "${SOURCES[@]}" |
        tar -C "$ROOTFS$WORK" -xf -
}

# The registry must hold a target wheel of each dependency that compiles from Rust (crates.io
# is out of reach): checked with the host's pip before minutes of userland setup.
# pip does not widen --platform to older glibc versions, so every manylinux tag up to the
# userland's glibc (2.36, Debian 12) is named.
check_rust_wheels() {
    local name requirement glibc scratch answer status platforms=()
    for glibc in $(seq 17 36); do
        platforms+=(--platform "manylinux_2_${glibc}_$WHEEL_CPU")
    done
    platforms+=(--platform "manylinux2014_$WHEEL_CPU" --platform "linux_$WHEEL_CPU")
    for name in $RUST_WHEELS; do
        requirement="$(runtime_requirement "$name")"
        scratch="$(mktemp -d)"
        status=0
        answer="$("${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: \
            --python-version 3.11 "${platforms[@]}" -d "$scratch" "$requirement" 2>&1)" ||
            status=$?
        rm -rf "$scratch"
        ((status)) || continue
        grep -q "No matching distribution" <<<"$answer" ||
            refuse "cannot ask the registry for a $ARCH wheel of $requirement:" \
                "$(grep -v '^WARNING' <<<"$answer" | tail -n1)"
        refuse "$ARCH cannot be built here: the registry has no $ARCH wheel of $requirement," \
            "and building it needs Rust crates from crates.io (docs/deploy.md)"
    done
}

# The runtime requirement of pyproject.toml naming the distribution $1.
runtime_requirement() {
    "${PYTHON:-python3}" -c 'import re, sys, tomllib
with open("pyproject.toml", "rb") as f:
    requirements = tomllib.load(f)["project"]["dependencies"]
print(next(r for r in requirements if re.match(re.escape(sys.argv[1]) + r"\b", r)))' "$1"
}

# The named test files inside the userland, in their own venv (see the header), from a fresh
# copy of edge_agent, tests and pyproject.toml.
test_core() {
    local start=$SECONDS file
    (($#)) || refuse "usage: packaging/foreign-arch.sh $ARCH test-core tests/test_x.py ..."
    for file in "$@"; do
        [[ "$file" =~ ^tests/test_[a-z0-9_]+\.py$ && -f "$file" ]] ||
            refuse "test-core: $file is not a test file under tests/"
    done
    [[ $EUID == 0 ]] || refuse "testing under $ARCH emulation needs root (chroot, binfmt_misc)"
    enable_emulation
    [[ -x "$ROOTFS/usr/bin/python3.11" ]] ||
        refuse "no $ARCH userland in $ROOTFS: run make package ARCH=$ARCH first"
    host_files
    rm -rf "$ROOTFS$CORE_WORK/src"
    mkdir -p "$ROOTFS$CORE_WORK/src"
    tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' -cf - edge_agent tests pyproject.toml |
        tar -C "$ROOTFS$CORE_WORK/src" -xf -
    in_userland "set -e; cd $CORE_WORK/src; $(core_venv_script)
../venv/bin/python -m pytest -q -p no:cacheprovider $*"
    echo "foreign-arch: $# test files passed in $((SECONDS - start)) s (emulated $ARCH)"
}

# Shell run inside the userland (under set -e): (re)creates ../venv when the requirements
# changed.
core_venv_script() {
    cat <<'EOF'
requirements="$(python3.11 -c 'import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["test"]))')"
want="$(echo "$requirements" | sha256sum | cut -d" " -f1)"
if [ "$(cat ../venv/.stamp 2>/dev/null)" != "$want" ]; then
    rm -rf ../venv
    python3.11 -m venv ../venv
    echo "$requirements" >../requirements.txt
    ../venv/bin/pip install --quiet --disable-pip-version-check -r ../requirements.txt
    echo "$want" >../venv/.stamp
fi
EOF
}

build() {
    local start=$SECONDS deb
    [[ $EUID == 0 ]] || refuse "building for $ARCH needs root (debootstrap, chroot, binfmt_misc)"
    check_rust_wheels
    install_tools
    enable_emulation
    setup_rootfs
    host_files
    in_userland "python3.11 -c 'import ssl, venv'" ||
        refuse "the $ARCH userland in $ROOTFS does not run under emulation"
    sync_sources
    in_userland "cd $WORK && FORCE=${FORCE:-0} $BUILD_ENV PYTHON=/usr/bin/python3.11 packaging/build.sh"
    deb="$(cd "$ROOTFS$WORK/dist" && ls edge-agent_*_"$ARCH".deb)"
    mkdir -p dist
    rm -f dist/edge-agent_*_"$ARCH".deb
    cp "$ROOTFS$WORK/dist/$deb" "dist/$deb"
    echo "foreign-arch: dist/$deb in $((SECONDS - start)) s (emulated $ARCH build)"
}

case "$COMMAND" in
build) build ;;
test-core) test_core "${@:3}" ;;
*) refuse "unknown command $COMMAND: packaging/foreign-arch.sh $ARCH [build|test-core FILES]" ;;
esac
