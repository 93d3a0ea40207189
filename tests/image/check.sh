#!/usr/bin/env bash
# The image test: unpacks target/image/aiops-operator.tar (make image) with
# umoci, a real OCI tool, into a runtime bundle, and checks what a container
# runtime would do with it:
#   - the archive is an OCI image layout (oci-layout, index.json, blobs/);
#   - the entrypoint is the binary, and the user is non-root (65532);
#   - the root filesystem holds the binary and nothing else needed: it runs
#     `--version` and `crd` chrooted into that rootfs as that user.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
archive="$repo/target/image/aiops-operator.tar"
work="$repo/target/image/check"
fail() { echo "image check: FAIL: $*" >&2; exit 1; }
pass() { echo "image check: ok: $*"; }

[[ -f $archive ]] || fail "no $archive (make image)"
command -v umoci >/dev/null || fail "umoci is not installed (make image installs it)"
command -v chroot >/dev/null || fail "chroot is not available"
[[ $(id -u) == 0 ]] || fail "unpacking a rootfs with its owners and chrooting need root"

rm -rf "$work"; mkdir -p "$work/layout"
tar -xf "$archive" -C "$work/layout"
for entry in oci-layout index.json blobs/sha256; do
  [[ -e $work/layout/$entry ]] || fail "the archive has no $entry: not an OCI image layout"
done
pass "OCI image layout (oci-layout, index.json, blobs/sha256)"

tag=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["manifests"]; print(m[0]["annotations"]["org.opencontainers.image.ref.name"])' "$work/layout/index.json")
umoci unpack --image "$work/layout:$tag" "$work/bundle" >/dev/null
rootfs="$work/bundle/rootfs"

read -r args user < <(python3 - "$work/bundle/config.json" <<'PY'
import json, sys
process = json.load(open(sys.argv[1]))["process"]
print(json.dumps(process["args"], separators=(",", ":")), process["user"]["uid"])
PY
)
[[ $args == '["/aiops-operator","run"]' ]] || fail "entrypoint and command are $args, expected [/aiops-operator run]"
pass "entrypoint /aiops-operator, command run"
[[ $user == 65532 ]] || fail "the image runs as uid $user, expected 65532 (non-root)"
pass "runs as uid 65532"

files=$(cd "$rootfs" && find . -mindepth 1 -not -type d | sort)
echo "image check: rootfs files: $(echo "$files" | tr '\n' ' ')"
grep -qx './aiops-operator' <<<"$files" || fail "no /aiops-operator in the rootfs"

version=$(chroot --userspec=65532:65532 "$rootfs" /aiops-operator --version) || fail "--version did not run inside the rootfs"
expected="aiops-operator $(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)"
[[ $version == "$expected" ]] || fail "--version printed '$version', expected '$expected'"
pass "--version inside the rootfs as 65532: $version"

chroot --userspec=65532:65532 "$rootfs" /aiops-operator crd > "$work/crd.yaml" || fail "crd did not run inside the rootfs"
cmp -s "$work/crd.yaml" "$repo/manifests/crd.yaml" || fail "crd inside the rootfs differs from manifests/crd.yaml"
pass "crd inside the rootfs prints manifests/crd.yaml"
rm -rf "$work"
