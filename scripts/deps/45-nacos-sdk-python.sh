# nacos-sdk-python: the official Python Nacos client, the consumer without a sidecar in the
# mixed-fleet tests (tests read $BERTH_NACOS_PYTHON). In its own virtual environment (its
# dependencies are not the other Python tools'), installed from scripts/nacos-sdk-python.txt
# (see scripts/locked-venv.sh).
source scripts/locked-venv.sh
locked_venv nacos-sdk-python scripts/nacos-sdk-python.txt \
  '"$venv/bin/python" -c "from v2.nacos import NacosNamingService"'
export BERTH_NACOS_PYTHON="$venv/bin/python"
