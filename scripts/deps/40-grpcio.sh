# grpcio: a real gRPC client and server for the gRPC tests (tests read $BERTH_GRPC_PYTHON), in
# its own virtual environment installed from scripts/deps/grpcio-requirements.txt (see
# scripts/locked-venv.sh).
source scripts/locked-venv.sh
locked_venv grpcio scripts/deps/grpcio-requirements.txt '"$venv/bin/python" -c "import grpc"'
export BERTH_GRPC_PYTHON="$venv/bin/python"
