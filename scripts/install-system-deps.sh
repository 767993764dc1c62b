#!/usr/bin/env bash
# The system packages the tests drive for real, installed when missing. `make test` (and
# every other target that builds the venv), `make package`, `make bench` and .ci/run run it.
#
# What and why: openssl (PEM interop), Mosquitto (the production broker), systemd-analyze
# (unit checks), dpkg-deb (the .deb), strip (PyInstaller), the swtpm software TPM with the
# TSS headers tpm2-pytss builds against (the TPM provider), and Debian's chromium (the
# console's browser tests drive it with Playwright through executable_path; never
# `playwright install`, which downloads a browser), man-db and groff-base (the man pages
# render: `man -l`), zsh and fish (their completion scripts pass `zsh -n` / `fish -n`),
# postgresql (the registry's PostgreSQL backend is tested against a real server:
# tests/postgres_support.py runs Debian's initdb and pg_ctl from /usr/lib/postgresql/*/bin,
# a server of its own per test session, never the system's cluster), iproute2 (`ip netns`:
# the multi-host tests' hosts, tests/netns_support.py). The venv gets the [tpm] extra only
# when pkg-config finds tss2-esys, so this runs before the venv
# is built.
#
# As root with apt-get: `apt-get update`, then install what is missing, quietly and
# non-interactively. Otherwise: one line naming the packages, and carry on; each test that
# needs a missing tool is then reported SKIPPED, naming the package (tests/system_tools.py).
# Under CI (CI=true) a package still missing is an error, here (exit 1) and in the tests
# (they fail instead of skipping): CI must never go green with the broker tests skipped.
#
# On a machine running systemd, Debian's postinst starts the system Mosquitto service on
# localhost:1883; the tests never use it (each starts its own broker on a free port).
set -euo pipefail

missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
{ [ -x /usr/sbin/mosquitto ] && command -v mosquitto_passwd >/dev/null 2>&1; } || missing+=(mosquitto)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
command -v strip >/dev/null 2>&1 || missing+=(binutils)
command -v swtpm >/dev/null 2>&1 || missing+=(swtpm swtpm-tools)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists tss2-esys 2>/dev/null || missing+=(libtss2-dev)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v man >/dev/null 2>&1 || missing+=(man-db)
command -v groff >/dev/null 2>&1 || missing+=(groff-base)
command -v zsh >/dev/null 2>&1 || missing+=(zsh)
command -v fish >/dev/null 2>&1 || missing+=(fish)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
[ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || command -v ip >/dev/null 2>&1 || missing+=(iproute2)
[ "${#missing[@]}" -eq 0 ] && exit 0

under_ci() { case "${CI:-}" in true | TRUE | True | 1 | yes) return 0 ;; *) return 1 ;; esac; }

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing the system packages the tests drive: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Wait for another apt/dpkg run to finish rather than fail on its lock.
    lock=(-o DPkg::Lock::Timeout=300)
    if apt-get "${lock[@]}" update -qq &&
        apt-get "${lock[@]}" install -y -qq "${missing[@]}" >/dev/null; then
        exit 0
    fi
    problem="apt-get could not install"
else
    problem="not root (or no apt-get), so not installing"
fi
line="$problem: ${missing[*]}; install them with 'sudo apt-get install ${missing[*]}', else the tests that need them are SKIPPED"
if under_ci; then
    echo "install-system-deps: $line. Under CI (CI=$CI) that is an error." >&2
    exit 1
fi
echo "install-system-deps: $line." >&2
