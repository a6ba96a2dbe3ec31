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

# --- berth's image, and its dependencies' licences (scripts/image.sh, deny.toml) -----------
echo "==> cargo deny check licenses bans sources"
cargo deny --locked check licenses bans sources
if command -v buildah >/dev/null 2>&1; then
  scripts/image.sh
else
  export BERTH_IMAGE_SKIP="buildah is not installed (scripts/deps/40-buildah.sh installs it as root)"
  echo "==> image skipped: $BERTH_IMAGE_SKIP"
fi
# -------------------------------------------------------------------------------------------

echo "==> tests"
cargo nextest run --workspace --locked --profile ci "$@"
