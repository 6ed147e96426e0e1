#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit and integration tests (the
# integration tests start real peers such as the openssl command line).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test
bash scripts/quickstart.sh
