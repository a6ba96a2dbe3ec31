# The Python tools the tests run (openapi-spec-validator for the admin API's OpenAPI document,
# kubernetes-validate for rendered manifests), in one virtual environment installed from
# scripts/python-tools.txt (see scripts/locked-venv.sh).
source scripts/locked-venv.sh
locked_venv python scripts/python-tools.txt \
  '"$venv/bin/kubernetes-validate" --version && "$venv/bin/openapi-spec-validator" --help'
export BERTH_PYTHON_TOOLS="$venv"
export BERTH_OPENAPI_VALIDATOR="$venv/bin/openapi-spec-validator"
export BERTH_KUBERNETES_VALIDATE="$venv/bin/kubernetes-validate"
