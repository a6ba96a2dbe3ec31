# grpcio: a real gRPC client and server for the gRPC tests (tests read $BERTH_GRPC_PYTHON), in
# its own virtual environment under the user's cache, installed from
# scripts/deps/grpcio-requirements.txt: every package pinned, every file checked against its
# sha256. A changed lock file makes a new environment.
berth_tools="${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools"
grpc_lock="scripts/deps/grpcio-requirements.txt"
grpc_env="$berth_tools/grpcio-$(sha256sum "$grpc_lock" | cut -c1-12)"
if ! "$grpc_env/bin/python" -c 'import grpc' >/dev/null 2>&1; then
  echo "==> installing grpcio from $grpc_lock"
  rm -rf "$grpc_env"
  mkdir -p "$berth_tools"
  python3 -m venv "$grpc_env"
  "$grpc_env/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$grpc_lock"
fi
# The one the tests look for when BERTH_GRPC_PYTHON is unset.
ln -sfn "$grpc_env" "$berth_tools/grpcio"
export BERTH_GRPC_PYTHON="$grpc_env/bin/python"
