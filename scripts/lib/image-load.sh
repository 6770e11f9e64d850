# How scripts/demo gets an image it built into the cluster of a kubectl context.

# Prints the command that loads `image`, built with `builder` (docker or podman), into the
# cluster of `context`, told by the context's name: kind, k3d and minikube name their contexts
# so. Prints nothing when the cluster runs on the builder's own images (Docker Desktop,
# Rancher Desktop, OrbStack); fails for any other context.
load_command() { # context image builder
  local context=$1 image=$2 builder=$3
  case "$context" in
    kind-*)
      [ "$builder" = podman ] && printf 'KIND_EXPERIMENTAL_PROVIDER=podman '
      printf 'kind load docker-image %s --name %s\n' "$image" "${context#kind-}" ;;
    k3d-*) printf 'k3d image import %s --cluster %s\n' "$image" "${context#k3d-}" ;;
    minikube) printf 'minikube image load %s\n' "$image" ;;
    docker-desktop | rancher-desktop | orbstack) ;;
    *) return 1 ;;
  esac
}
