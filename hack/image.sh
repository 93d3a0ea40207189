#!/usr/bin/env bash
# `make image`: the operator image as an OCI archive, built without a Docker
# daemon: buildah with vfs storage (no overlay mounts needed) and chroot
# isolation (no runtime needed), its storage kept under target/image/ so it
# never touches a system-wide image store.
#
#   hack/image.sh BINARY [BASE]   writes target/image/aiops-operator.tar and
#                                 prints its manifest digest on stdout
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${1:?usage: image.sh BINARY [BASE]}
base=${2:-scratch}
out="$repo/target/image"
tag=${IMAGE_TAG:-aiops-operator:$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)}

[[ -x $bin ]] || { echo "image: no binary at $bin (make build-static)" >&2; exit 1; }
if readelf -l "$bin" | grep -q 'program interpreter'; then
  echo "image: $bin is dynamically linked; the image has no libc (make build-static)" >&2
  exit 1
fi

bash "$repo/hack/image-tools.sh"
buildah() {
  command buildah --storage-driver vfs --root "$out/storage" --runroot "$out/run" "$@"
}

# The build context is a folder with the binary alone (see Dockerfile).
rm -rf "$out/context" "$out/aiops-operator.tar" "$out/digest"
mkdir -p "$out/context"
cp "$bin" "$out/context/aiops-operator"

start=$(date +%s%N)
buildah build --quiet --isolation chroot --layers=false \
  --build-arg "BASE=$base" -f "$repo/Dockerfile" -t "$tag" "$out/context" >/dev/null
buildah push --quiet --digestfile "$out/digest" "$tag" "oci-archive:$out/aiops-operator.tar:$tag" >&2
# The local store only served this push: drop it so vfs copies do not pile up.
buildah rmi --all >/dev/null 2>&1 || true
rm -rf "$out/context"
size=$(du -h "$out/aiops-operator.tar" | cut -f1)
echo "image: $tag (base $base) -> target/image/aiops-operator.tar, $size, $(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN{printf "%.1f", (b-a)/1e9}') s" >&2
cat "$out/digest"; echo
