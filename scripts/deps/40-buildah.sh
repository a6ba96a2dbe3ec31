# buildah: builds berth's image and runs it for the image tests, without a daemon
# (scripts/image.sh). Debian's package, when this is root; otherwise the image is skipped,
# saying so (scripts/test.sh).
if ! command -v buildah >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing buildah (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah >/dev/null
fi
