# grpcio: a real gRPC client and server for the gRPC tests (tests read $BERTH_GRPC_PYTHON).
# Installed into its own virtualenv from a pinned list with every dependency, no resolver.
GRPCIO_VERSION=1.84.0
berth_tools="${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools"
grpc_env="$berth_tools/grpcio-$GRPCIO_VERSION"
grpc_python="$grpc_env/bin/python"
if ! "$grpc_python" -c 'import grpc' >/dev/null 2>&1; then
  echo "==> installing grpcio $GRPCIO_VERSION"
  rm -rf "$grpc_env"
  python3 -m venv "$grpc_env"
  "$grpc_env/bin/pip" install --quiet --disable-pip-version-check --no-deps -r scripts/deps/grpcio-requirements.txt
fi
export BERTH_GRPC_PYTHON="$grpc_python"
