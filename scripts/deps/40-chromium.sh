# chromium and chromedriver: the page test drives a real headless browser through the W3C
# WebDriver protocol (tests read $BERTH_CHROMEDRIVER and $BERTH_CHROMIUM). Debian's packages.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing chromium and chromium-driver (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-dejavu-core >/dev/null
fi
BERTH_CHROMEDRIVER="$(command -v chromedriver)"
BERTH_CHROMIUM="$(command -v chromium)"
export BERTH_CHROMEDRIVER BERTH_CHROMIUM
