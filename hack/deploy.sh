#!/usr/bin/env bash
# `make deploy IMG=registry/name:tag` / `make undeploy`: manifests/ applied
# through a kustomize overlay whose `images:` entry swaps the image the
# Deployment names for IMG, the way Kubebuilder projects deploy. The overlay
# is written under target/ so the checked-in tree never changes.
#
#   deploy.sh apply IMG      kubectl apply -k the overlay
#   deploy.sh delete         kubectl delete -k manifests/
#   deploy.sh render IMG     print the overlay's output (for tests)
# Environment: KUBECTL (default kubectl).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# KUBECTL may carry flags (e.g. "kubectl --kubeconfig FILE").
read -ra kubectl <<< "${KUBECTL:-kubectl}"
# The image manifests/operator.yaml names; kustomize matches on it.
placeholder=ghcr.io/aiops-operator/aiops-operator

overlay() {
  local img=$1 name tag="" digest=""
  if [[ $img == *@* ]]; then
    name=${img%%@*}; digest=${img#*@}
  elif [[ ${img##*/} == *:* ]]; then
    name=${img%:*}; tag=${img##*:}
  else
    name=$img; tag=latest
  fi
  local dir="$repo/target/deploy"
  rm -rf "$dir"; mkdir -p "$dir"
  {
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources: [../../manifests]"
    echo "images:"
    echo "  - name: $placeholder"
    echo "    newName: $name"
    [[ -n $tag ]] && echo "    newTag: \"$tag\""
    [[ -n $digest ]] && echo "    digest: \"$digest\""
  } > "$dir/kustomization.yaml"
  echo "$dir"
}

case ${1:-} in
  apply)  "${kubectl[@]}" apply --server-side -k "$(overlay "${2:?IMG=registry/name:tag is required}")" ;;
  render) "${kubectl[@]}" kustomize "$(overlay "${2:?IMG is required}")" ;;
  delete) "${kubectl[@]}" delete --ignore-not-found -k "$repo/manifests" ;;
  *) echo "usage: deploy.sh apply IMG | render IMG | delete" >&2; exit 2 ;;
esac
