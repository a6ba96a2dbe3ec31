# kubernetes-validate: checks rendered manifests offline against the official Kubernetes
# schemas (tests read $BERTH_KUBERNETES_VALIDATE). Installed into its own virtualenv.
KUBERNETES_VALIDATE_VERSION=1.37.0
berth_tools="${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools"
kv_env="$berth_tools/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
kv_bin="$kv_env/bin/kubernetes-validate"
if ! "$kv_bin" --version >/dev/null 2>&1; then
  echo "==> installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION"
  rm -rf "$kv_env"
  python3 -m venv "$kv_env"
  "$kv_env/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
export BERTH_KUBERNETES_VALIDATE="$kv_bin"
