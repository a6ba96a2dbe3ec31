# openapi-spec-validator: validates the admin API's OpenAPI document (a Python tool from PyPI,
# in its own virtual environment under the user's cache).
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
oasv_venv="${XDG_CACHE_HOME:-$HOME/.cache}/berth/openapi-spec-validator-$OPENAPI_SPEC_VALIDATOR_VERSION"
if ! "$oasv_venv/bin/openapi-spec-validator" --help >/dev/null 2>&1; then
  echo "==> installing openapi-spec-validator $OPENAPI_SPEC_VALIDATOR_VERSION"
  if ! python3 -m venv --help >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  rm -rf "$oasv_venv"
  python3 -m venv "$oasv_venv"
  "$oasv_venv/bin/pip" install --quiet --disable-pip-version-check \
    "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
fi
export BERTH_OPENAPI_VALIDATOR="$oasv_venv/bin/openapi-spec-validator"
