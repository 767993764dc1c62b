# Every target sets itself up from nothing: a .venv in the checkout, created on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ORACLE_VENV := .venv-oracle
ORACLE_STAMP := $(ORACLE_VENV)/.installed-stamp

.PHONY: all demo test test-slow test-postgres test-arm test-arm-core bench-arm soak check bench bench-quick format package cli-docs clean system-deps

all: check test

# The system packages the tests drive (Mosquitto, openssl, swtpm, ...): installed with apt-get
# when root, otherwise named on one line, and the tests needing them skip saying which package
# (under CI=true they fail instead). Order-only before the venv: its [tpm] extra is installed
# only when libtss2-dev is there by then.
system-deps:
	scripts/install-system-deps.sh

$(STAMP): pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[hub,test,bench,dev,packaging]'
	if pkg-config --exists tss2-esys; then \
		$(BIN)/pip install --quiet --disable-pip-version-check -e '.[tpm]'; \
	else echo "libtss2-dev not found: the TPM provider is not installed and its tests skip"; fi
	touch $@

# python-cwt pins cbor2<6 while the agent needs cbor2 6's hardened decoder, so the COSE
# oracle lives in its own small environment and is driven as a subprocess by the tests.
$(ORACLE_STAMP): tests/oracle/requirements.txt
	$(PYTHON) -m venv $(ORACLE_VENV)
	$(ORACLE_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/oracle/requirements.txt
	touch $@

# CONSOLE=1: after the story, serve the governance console on 127.0.0.1:$(CONSOLE_PORT)
# and stay up until Ctrl-C (docs/console.md).
CONSOLE_PORT ?= 8080
demo: $(STAMP)
	$(BIN)/python -m hub.demo $(if $(CONSOLE),--console 127.0.0.1:$(CONSOLE_PORT))

ORACLE_ENV = EDGEGOV_ORACLE_PYTHON=$(abspath $(ORACLE_VENV))/bin/python

# pytest-xdist workers: most tests wait on brokers, subprocesses and fsyncs, so more workers
# than this machine type's 2 cores pay. A file's tests stay on one worker (--dist loadfile):
# module fixtures, the packaged build among them, run once.
TEST_WORKERS ?= 3
PARALLEL = -n $(TEST_WORKERS) --dist loadfile

# The whole suite, then the hub suite again on a PostgreSQL registry (test-postgres).
test: $(STAMP) $(ORACLE_STAMP)
	$(ORACLE_ENV) $(BIN)/pytest -m "not slow and not soak" -q $(PARALLEL)
	$(MAKE) --no-print-directory test-postgres

test-slow: $(STAMP) $(ORACLE_STAMP)
	$(ORACLE_ENV) $(BIN)/pytest -m "not soak and not emulated" -q $(PARALLEL)

# The whole hub suite (hub, console and the end-to-end tests that run a hub) on a PostgreSQL
# registry instead of hub.db (tests/hub_support.py); SQLite-specific tests (sqlite_only) skip.
# make test runs it after the whole suite (whose registry tests cover both backends already).
# Not here: the registry migration and backend tests (test_registry_*: one backend each, or
# both already), and test_multihost_faults (its hosts include a PostgreSQL one of its own, so
# its hubs run on PostgreSQL anyway). test_bridged_sites is here: its hub reaches the suite's
# database through the server's unix socket from its network namespace.
HUB_SUITE := tests/test_hub_*.py tests/test_console_*.py tests/test_ancestry_e2e.py \
	tests/test_attest_cli.py tests/test_attest_e2e.py tests/test_attest_tpm.py \
	tests/test_attest_verifier.py tests/test_bridged_sites.py tests/test_bundle_diff.py \
	tests/test_bundle_eval.py tests/test_fabric_e2e.py tests/test_lineage_ancestry.py \
	tests/test_mosquitto_acl_render.py tests/test_receipts_e2e.py tests/test_rollout_cli.py \
	tests/test_rollout_e2e.py tests/test_shadow_e2e.py tests/test_tpm_quote.py
test-postgres: $(STAMP) $(ORACLE_STAMP)
	EDGEGOV_TEST_REGISTRY=postgresql $(ORACLE_ENV) $(BIN)/pytest -m "not slow and not soak" -q \
		$(PARALLEL) $(HUB_SUITE)

# Long fuzz, soak and abuse runs (the soak marker), never part of make test or test-slow:
# about 80 minutes; figures in soak-results/. The fuzzer (atheris) is only needed here.
FUZZ_STAMP := $(VENV)/.fuzz-stamp
$(FUZZ_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[fuzz]'
	touch $@

soak: $(STAMP) $(ORACLE_STAMP) $(FUZZ_STAMP)
	$(ORACLE_ENV) $(BIN)/pytest -m soak -q -rA

check: $(STAMP)
	$(BIN)/ruff check edge_agent hub tests bench scripts
	$(BIN)/ruff format --check edge_agent hub tests bench scripts
	$(BIN)/mypy --strict edge_agent hub scripts/gen_cli_docs.py
	$(BIN)/lint-imports --no-cache --no-logo

format: $(STAMP)
	$(BIN)/ruff format edge_agent hub tests bench scripts
	$(BIN)/ruff check --fix edge_agent hub tests bench scripts

# Every benchmark, full size; each prints its table (see README). A quiet machine matters.
bench: $(STAMP)
	$(BIN)/python bench/decide.py
	$(BIN)/python bench/lineage.py
	$(BIN)/python bench/decision_socket.py
	$(BIN)/python bench/hub_ingest.py
	$(BIN)/python bench/receipts.py
	$(BIN)/python bench/ancestry.py
	$(BIN)/python bench/rollout.py
	$(BIN)/python bench/shadow.py
	$(BIN)/python bench/console.py
	$(BIN)/python bench/fleet.py
	$(BIN)/python bench/attest.py
	$(BIN)/python bench/broker_memory.py
	$(BIN)/python bench/idle.py
	$(BIN)/python bench/policy_build.py
	$(BIN)/python bench/scale.py
	if [ "$$(id -u)" = 0 ]; then $(BIN)/python bench/exec.py; \
	else echo "bench/exec.py skipped: it needs root (fanotify, mounts)"; fi

# Every benchmark's quick form, as a smoke run of the figures (under 5 minutes; abuse and soak
# too, whose full runs are in make soak): the numbers are indicative only; compare full runs
# (make bench) on a quiet machine. Every script runs even when one exits non-zero (lineage
# and receipts do on a missed target); the names are listed at the end and the exit is 1.
# bench/arm_emulated.py stays in make bench-arm (qemu); bench/scale.py --quick (~3 minutes of
# its own: a PostgreSQL server, three brokers, 300 agents) is run alone, as the README says.
bench-quick: $(STAMP)
	@failed=""; \
	for script in decide lineage decision_socket hub_ingest receipts ancestry rollout shadow \
	    console fleet attest broker_memory idle policy_build abuse soak; do \
	  echo "== bench/$$script.py --quick"; \
	  $(BIN)/python bench/$$script.py --quick || failed="$$failed $$script"; \
	done; \
	if [ "$$(id -u)" = 0 ]; then $(BIN)/python bench/exec.py --quick || failed="$$failed exec"; \
	else echo "bench/exec.py skipped: it needs root (fanotify, mounts)"; fi; \
	if [ -n "$$failed" ]; then echo "bench-quick: non-zero exit (missed target or error):$$failed"; \
	  exit 1; fi

# Shell completion (bash, zsh, fish) and man pages for edge-agent, edge-hub and edge-verify,
# generated from their parsers into build/cli-docs/ (laid out as /usr/share; README says how to
# install them from a checkout). The .deb ships the agent's and edge-verify's (packaging/build.sh).
cli-docs: $(STAMP)
	$(BIN)/python scripts/gen_cli_docs.py --out build/cli-docs

# The self-contained agent (PyInstaller onedir in dist/edge-agent/) and
# dist/edge-agent_<version>_<arch>.deb. packaging/build.sh sets up its own build venv
# (build/venv: the runtime dependencies and the pinned PyInstaller) and rebuilds only when
# something that goes into the build changed. ARCH=arm64 or ARCH=armhf builds that architecture's
# package under qemu-user emulation, in a Debian userland cached in build/foreign/<arch>/
# (packaging/foreign-arch.sh; needs root and binfmt_misc).
HOST_ARCH := $(shell dpkg --print-architecture)
ARCH ?= $(HOST_ARCH)
package: system-deps
ifeq ($(ARCH),$(HOST_ARCH))
	PYTHON=$(PYTHON) packaging/build.sh
else
	PYTHON=$(PYTHON) packaging/foreign-arch.sh $(ARCH)
endif

# The packaged ARM agents' stories under qemu-user emulation (the emulated marker: offline
# story, edge-agent run against an amd64 hub over MQTT, cross-architecture decision digests),
# then the pure core's unit tests inside the arm64 userland. Never in make test or test-slow.
# Builds the arm64 package first when it is missing or stale.
test-arm: $(STAMP)
	$(MAKE) package ARCH=arm64
	$(BIN)/pytest -m emulated -q -rs --durations=0
	$(MAKE) test-arm-core

# The pure core's unit tests (protocol, policy, trust) run by the arm64 userland's CPython
# under emulation, in a venv of their own there (packaging/foreign-arch.sh test-core).
ARM_CORE_TESTS := tests/test_dcbor.py tests/test_cose_envelope.py tests/test_cose_header_codes.py \
	tests/test_cose_vectors.py tests/test_merkle.py tests/test_merkle_vectors.py \
	tests/test_checkpoint.py tests/test_lineage_entries.py tests/test_policy_engine.py \
	tests/test_policy_properties.py tests/test_bundle_targeting.py tests/test_gate.py \
	tests/test_trust_machine.py tests/test_determinism.py tests/test_attest_protocol.py
test-arm-core:
	$(MAKE) package ARCH=arm64
	packaging/foreign-arch.sh arm64 test-core $(ARM_CORE_TESTS)

# The packaged agent of every architecture in dist/ side by side (ARM emulated, for scale
# only): sizes, decide latency, idle RSS (bench/arm_emulated.py). Not part of make bench.
bench-arm: $(STAMP)
	$(MAKE) package
	$(MAKE) package ARCH=arm64
	$(BIN)/python bench/arm_emulated.py

clean:
	rm -rf $(VENV) $(ORACLE_VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
