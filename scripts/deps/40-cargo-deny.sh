# cargo-deny: checks the dependencies' licences, duplicate versions and sources against
# deny.toml (scripts/test.sh). Built from crates.io, pinned: 270 s of CPU once (measured;
# about 3 minutes on two idle cores).
CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
  echo "==> installing cargo-deny $CARGO_DENY_VERSION"
  cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION"
fi
