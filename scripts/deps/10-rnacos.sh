# rnacos: the Nacos-compatible server the tests register in (about 11 minutes to build once).
RNACOS_VERSION=0.8.8
rnacos_bin="${CARGO_HOME:-$HOME/.cargo}/bin/rnacos"
if ! "$rnacos_bin" -V 2>/dev/null | grep -qx "rnacos $RNACOS_VERSION"; then
  echo "==> installing rnacos $RNACOS_VERSION (takes a while, once)"
  cargo install rnacos --locked --version "$RNACOS_VERSION"
fi
export BERTH_RNACOS="$rnacos_bin"
