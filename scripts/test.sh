#!/usr/bin/env bash
# Runs every test of the workspace (shunt, shunt-testkit, shunt-gen): unit,
# property, config/CLI, and the namespace lab tests against the real kernel.
# Needs root (namespaces, XDP, AF_XDP): without it the lab tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --workspace --locked 2>/dev/null || cargo build --release --workspace
# Lab tests share one set of namespaces; each takes a lock, and test
# binaries run one after another. tests/lab_scaleout.rs brings up the
# two-node tier (scripts/scaleout.sh) with BIRD and ExaBGP: about a minute.
cargo test --release --workspace -- --test-threads=2
# The Debian package: build, install, `shunt check` as the service user, purge.
bash scripts/test-package.sh --no-build
# A short soak: traffic, control changes, RSS before/after (scripts/soak.sh).
bash scripts/soak.sh 20
bash scripts/lab.sh down >/dev/null
bash scripts/scaleout.sh down >/dev/null
