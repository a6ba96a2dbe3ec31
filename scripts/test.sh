#!/usr/bin/env bash
# Runs every berth test. Installs what the tests need when it is missing: each file in
# scripts/deps/ checks for one tool and installs it (rnacos, cargo-nextest, …).
set -euo pipefail
cd "$(dirname "$0")/.."

for dep in scripts/deps/*.sh; do
  # shellcheck source=/dev/null
  source "$dep"
done

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> tests"
cargo nextest run --workspace --locked --profile ci "$@"
