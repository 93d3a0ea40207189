#!/usr/bin/env bash
# Installs the pinned buildah and umoci from Debian (hack/versions.env) unless
# exactly those versions are already installed. apt-get needs root.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

installed() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

if [[ $(installed buildah) == "$BUILDAH_DEB" && $(installed umoci) == "$UMOCI_DEB" ]]; then
  exit 0
fi
command -v apt-get >/dev/null || { echo "image-tools: apt-get is required to install buildah $BUILDAH_DEB and umoci $UMOCI_DEB" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "image-tools: installing buildah and umoci with apt-get needs root" >&2; exit 1; }
echo "image-tools: installing buildah $BUILDAH_DEB and umoci $UMOCI_DEB from Debian" >&2
# shellcheck source=apt-lock.sh
source "$here/apt-lock.sh"
apt_lock
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "buildah=$BUILDAH_DEB" "umoci=$UMOCI_DEB" >&2
