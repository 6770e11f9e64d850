# Volumes for claims on a node without a provisioner (the real node of scripts/dev-cluster).

# A `local` PersistentVolume in a new directory under `root`, bound ahead of time to the
# claim `namespace/name` (made again if an earlier claim of that name was deleted: a
# Released volume is never bound again).
local_volume() { # namespace name root
  local ns=$1 name=$2 dir=$3/demo-$1-$2
  mkdir -p "$dir"
  if [ "$(kubectl get pv "demo-$ns-$name" -o jsonpath='{.status.phase}' 2>/dev/null)" = Released ]; then
    kubectl delete pv "demo-$ns-$name" --wait=true >/dev/null
  fi
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: demo-$ns-$name}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {namespace: $ns, name: $name}
  local: {path: $dir}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{key: kubernetes.io/hostname, operator: Exists}]
YAML
}
