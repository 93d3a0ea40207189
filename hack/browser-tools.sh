#!/usr/bin/env bash
# Installs the pinned Chromium and chromedriver from Debian (hack/versions.env)
# unless exactly those versions are already installed. apt-get needs root.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

installed() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

if [[ $(installed chromium) == "$CHROMIUM_DEB" && $(installed chromium-driver) == "$CHROMIUM_DRIVER_DEB" ]]; then
  exit 0
fi
command -v apt-get >/dev/null || { echo "browser-tools: apt-get is required to install chromium $CHROMIUM_DEB and chromium-driver $CHROMIUM_DRIVER_DEB" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "browser-tools: installing chromium and chromium-driver with apt-get needs root" >&2; exit 1; }
echo "browser-tools: installing chromium $CHROMIUM_DEB and chromium-driver $CHROMIUM_DRIVER_DEB from Debian" >&2
# shellcheck source=apt-lock.sh
source "$here/apt-lock.sh"
apt_lock
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "chromium=$CHROMIUM_DEB" "chromium-driver=$CHROMIUM_DRIVER_DEB" >&2
