# The Coffer image in scripts/demo: how one it built gets into the cluster of a kubectl
# context, and Helm's settings for an image reference.

# Prints the shell command that loads the image `archive` (written by `builder save`, docker
# or podman) into the cluster of `context`, told by the context's name: kind, k3d and
# minikube name their contexts so. Prints nothing when the cluster runs on docker's own
# images (Docker Desktop, Rancher Desktop, OrbStack) and the builder is docker; fails for any
# other context.
load_command() { # context archive builder
  local context=$1 archive=$2 builder=$3
  case "$context" in
    kind-*)
      # kind finds its nodes through docker, or through podman when told so.
      [ "$builder" = podman ] && printf 'KIND_EXPERIMENTAL_PROVIDER=podman '
      printf 'kind load image-archive %q --name %q\n' "$archive" "${context#kind-}" ;;
    k3d-*) printf 'k3d image import %q --cluster %q\n' "$archive" "${context#k3d-}" ;;
    minikube) printf 'minikube image load %q\n' "$archive" ;;
    docker-desktop | rancher-desktop | orbstack) [ "$builder" = docker ] ;;
    *) return 1 ;;
  esac
}

# Helm's image settings for a reference: --set-string repository, tag or digest. A colon is
# a tag only after the last slash (a registry may have a port); numeric tags stay strings.
image_settings() { # reference
  local ref=$1 name tag=
  if [[ "$ref" == *@* ]]; then
    printf '%s\n' --set-string "image.repository=${ref%@*}" --set-string "image.digest=${ref#*@}"
    return
  fi
  name=$ref
  if [[ "${ref##*/}" == *:* ]]; then
    name=${ref%:*} tag=${ref##*:}
  fi
  printf '%s\n' --set-string "image.repository=$name"
  [ -z "$tag" ] || printf '%s\n' --set-string "image.tag=$tag"
}
