# scripts/demo in a cluster with real nodes (sourced by scripts/demo), as a user would run
# Coffer: the chart installed with `helm install`, Redis, PostgreSQL and an S3 server as
# workloads in the cluster, and the unmodified examples backing them up by their Services'
# names (only the store's endpoint and the schedules' cron changed).
#
# $mode is `real-node` (scripts/dev-cluster up --real-node on this machine, the images built
# here) or `current` (the cluster KUBECONFIG points at: kind, k3d, minikube, Docker Desktop,
# or any cluster that can pull COFFER_DEMO_IMAGE).

release=coffer
system_ns=coffer-system
namespaces=("$system_ns" storage shop platform)
crds=(backupschedules.coffer.dev backups.coffer.dev restorerequests.coffer.dev notifiers.coffer.dev)
s3_user=coffer-demo
s3_password=coffer-demo-secret
redis_password=coffer-demo-redis
pg_admin_password=coffer-demo-admin
pg_backup_password=coffer-demo-backup

# What the demo creates in a cluster carries the label coffer.dev/demo=true, and only what
# carries it is ever deleted. Whether object $1 ($2: namespace, crd) carries it; any error
# other than "not found" stops the demo, so that a cluster that did not answer is never
# taken for one without the user's objects.
demo_owned() { # kind name
  local out
  out=$(kubectl get "$1" "$2" --ignore-not-found -o jsonpath='{.metadata.labels.coffer\.dev/demo}') \
    || die "cannot read $1 $2 from the cluster (kubectl's error is above); try again"
  [ "$out" = true ]
}
# Whether object $1 $2 exists.
exists() { # kind name
  local out
  out=$(kubectl get "$1" "$2" --ignore-not-found -o name) \
    || die "cannot read $1 $2 from the cluster (kubectl's error is above); try again"
  [ -n "$out" ]
}

operator_alive() { true; } # the Deployment restarts it; a lost operator shows as a timeout
operator_log() { kubectl -n "$system_ns" logs "deployment/$release-controller" --tail="$1" 2>&1 || true; }
log_hint="kubectl -n $system_ns logs deployment/$release-controller"
installed=0

stop_mode() {
  if [ "$started_cluster" = 1 ]; then
    scripts/dev-cluster down || true
  elif [ "$mode" = current ] && [ "$installed" = 1 ] && [ "${COFFER_DEMO_KEEP:-0}" != 1 ]; then
    remove_from_cluster
  elif [ "$mode" = real-node ]; then
    echo "scripts/demo: the dev-cluster was already running; it keeps running (scripts/dev-cluster down stops it)" >&2
  fi
}

# What the demo put into a cluster that it did not start, in the order that lets every
# finalizer finish: the schedules and Backups, while the operator and the store still run
# (the Backups' finalizers delete the stored data); the demo's namespaces but the operator's,
# waited for; the release; its namespace; the CRDs, if the demo made them and nothing of
# theirs is left. Each wait is bounded; what could not be removed is named.
remove_from_cluster() {
  echo "scripts/demo: removing the demo from context $context (COFFER_DEMO_KEEP=1 keeps it); this takes up to a few minutes" >&2
  local ns left=()
  for ns in shop platform; do
    demo_owned namespace "$ns" || continue
    kubectl -n "$ns" delete backupschedules,backups,restorerequests --all --wait=true \
      --timeout=120s >/dev/null || left+=("the Coffer objects of namespace $ns")
  done
  for ns in shop platform storage; do
    demo_owned namespace "$ns" || continue
    kubectl delete namespace "$ns" --wait=true --timeout=120s >/dev/null || left+=("namespace $ns")
  done
  if demo_owned namespace "$system_ns"; then
    helm uninstall "$release" --namespace "$system_ns" --wait --timeout 60s >/dev/null || left+=("release $release")
    kubectl delete namespace "$system_ns" --wait=true --timeout=120s >/dev/null || left+=("namespace $system_ns")
  fi
  local crd
  for crd in "${crds[@]}"; do
    demo_owned crd "$crd" || continue
    [ -z "$(kubectl get "${crd%%.*}" -A -o name 2>/dev/null)" ] || { left+=("CRD $crd (objects of it are left)"); continue; }
    kubectl delete crd "$crd" --wait=true --timeout=60s >/dev/null || left+=("CRD $crd")
  done
  [ ${#left[@]} -eq 0 ] || echo "scripts/demo: could not remove: ${left[*]}; remove them by hand (kubectl get namespaces,crds -l coffer.dev/demo=true)" >&2
}

source scripts/lib/demo-image.sh
source scripts/lib/demo-data.sh

# --- 1. The cluster and the image ------------------------------------------------------------
pull_policy=IfNotPresent
if [ "$mode" = real-node ]; then
  if scripts/dev-cluster env >/dev/null 2>&1; then
    scripts/dev-cluster env 2>/dev/null | grep -q '^export COFFER_IMAGE=' \
      || die "the running dev-cluster has no real node; stop it first (scripts/dev-cluster down), or run scripts/demo --process"
    say "Reusing the running dev-cluster with its real node (it stays up when the demo ends)"
  else
    say "Starting a one-node cluster in real containers (scripts/dev-cluster up --real-node; the first run builds the image)"
    started_cluster=1
    scripts/dev-cluster up --real-node >/dev/null \
      || die "scripts/dev-cluster up --real-node failed (its error is above; its log is .cache/dev-cluster/log); fix that and run scripts/demo again"
  fi
  eval "$(scripts/dev-cluster env)"
  image=$COFFER_IMAGE
  services_image=$COFFER_SERVICES_IMAGE
  pull_policy=Never
else
  command -v kubectl >/dev/null || die "kubectl is missing; install it, or unset KUBECONFIG to use a cluster on this machine"
  command -v helm >/dev/null || die "helm is missing; install Helm 3, or unset KUBECONFIG to use a cluster on this machine"
  context=$(kubectl config current-context 2>/dev/null) \
    || die "KUBECONFIG=$KUBECONFIG names no current context; kubectl config use-context NAME, or unset KUBECONFIG"
  # The demo's own copy of that context: switching contexts elsewhere meanwhile cannot send
  # the rest of the demo, or its cleanup, to another cluster.
  install -m 600 /dev/null "$demo/kubeconfig"
  kubectl config view --minify --flatten >"$demo/kubeconfig" \
    || die "cannot read the context $context from KUBECONFIG=$KUBECONFIG"
  export KUBECONFIG=$demo/kubeconfig
  kubectl --request-timeout=10s get --raw /readyz >/dev/null 2>&1 \
    || die "the cluster of context $context does not answer; start it, or unset KUBECONFIG to use a cluster on this machine"
  say "Using your cluster: context $context"
  # Never into anything that is someone else's: Coffer installed otherwise (its CRDs), or a
  # namespace the demo would write into.
  for crd in "${crds[@]}"; do
    if exists crd "$crd" && ! demo_owned crd "$crd"; then
      die "Coffer is already installed in this cluster (CRD $crd); the demo would run a second operator beside it: use another cluster or context"
    fi
  done
  for ns in "${namespaces[@]}"; do
    if exists namespace "$ns" && ! demo_owned namespace "$ns"; then
      die "namespace $ns exists and is not the demo's; the demo would write into it: use another cluster or context"
    fi
    # An earlier demo's, still being removed.
    if [ "$(kubectl get namespace "$ns" --ignore-not-found -o jsonpath='{.status.phase}')" = Terminating ]; then
      echo "namespace $ns of an earlier demo is still being removed; waiting for it" >&2
      kubectl wait --for=delete "namespace/$ns" --timeout=180s >/dev/null \
        || die "namespace $ns, left by an earlier demo, is still being deleted after 3 minutes; see kubectl get namespace $ns -o yaml"
    fi
  done
  if [ -n "${COFFER_DEMO_IMAGE:-}" ]; then
    image=$COFFER_DEMO_IMAGE
  else
    builder=$(command -v docker || command -v podman || true)
    [ -n "$builder" ] || die "neither docker nor podman is installed to build the image; build and push it yourself, then run COFFER_DEMO_IMAGE=REGISTRY/coffer:TAG scripts/demo"
    builder=$(basename "$builder")
    image=localhost/coffer:demo
    archive=$demo/coffer-image.tar
    load=$(load_command "$context" "$archive" "$builder") \
      || die "cannot tell how to load an image built with $builder into context $context (kind, k3d and minikube are known, and Docker Desktop, Rancher Desktop and OrbStack with docker); push the image to a registry it pulls from and run COFFER_DEMO_IMAGE=REGISTRY/coffer:TAG scripts/demo"
    say "Building the Coffer image with $builder from the Dockerfile (the first build takes several minutes)"
    "$builder" build -t "$image" . || die "$builder build failed (its error is above); fix that and run scripts/demo again"
    if [ -n "$load" ]; then
      say "Loading it into the cluster: $load"
      rm -f "$archive"
      "$builder" save -o "$archive" "$image" || die "$builder save failed (its error is above)"
      bash -c "$load" || die "loading the image failed (its error is above): $load"
      rm -f "$archive"
    fi
    pull_policy=Never
  fi
  # The sources' images: the ones built here (COFFER_DEMO_SERVICES_IMAGE), or public ones.
  services_image=${COFFER_DEMO_SERVICES_IMAGE:-}
fi
ready_at=$SECONDS
say "The Coffer image: $image (pull policy $pull_policy)"

# --- 2. Namespaces, the chart ----------------------------------------------------------------
installed=1 # from here on, the cleanup removes what the demo made
for ns in "${namespaces[@]}"; do
  exists namespace "$ns" || kubectl create -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: $ns
  labels:
    coffer.dev/demo: "true"
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
YAML
done

say "helm install $release charts/coffer (2 replicas, the image and its pull policy set)"
mapfile -t image_args < <(image_settings "$image")
helm upgrade --install "$release" charts/coffer --namespace "$system_ns" "${image_args[@]}" \
  --set-string "image.pullPolicy=$pull_policy" --wait --timeout 300s >/dev/null \
  || die "helm install failed (its error is above); see kubectl -n $system_ns get pods,events"
# The CRDs came with the chart (none was there before, or it was the demo's): the demo's,
# removed with it.
kubectl label crd "${crds[@]}" coffer.dev/demo=true --overwrite >/dev/null
kubectl -n "$system_ns" get deployment "$release-controller"

# --- 3. Volumes ------------------------------------------------------------------------------
# The real node has no provisioner: each claim gets a local volume bound to it ahead of time.
# Other clusters provision the claims with their default StorageClass.
claims=(shop/data-redis-0 shop/data-pg-0 platform/functions-data platform/backup-store)
if [ "$mode" = real-node ]; then
  source scripts/lib/local-volumes.sh
  for claim in "${claims[@]}"; do
    local_volume "${claim%/*}" "${claim#*/}" "$COFFER_NODE_STATE/volumes"
  done
fi
for claim in platform/functions-data platform/backup-store; do
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: ${claim#*/}, namespace: ${claim%/*}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
YAML
done

# --- 4. The sources and the store, as workloads ------------------------------------------------
say "Redis and PostgreSQL as StatefulSets, an S3 server in namespace storage"
secret shop redis-auth "password=$redis_password"
secret shop pg-admin "password=$pg_admin_password"
secret shop pg-auth "password=$pg_backup_password"
for ns in shop storage; do
  secret "$ns" s3-creds "AWS_ACCESS_KEY_ID=$s3_user" "AWS_SECRET_ACCESS_KEY=$s3_password"
done

# The restricted Pod Security Standard, running as $1 (volumes group-owned by it).
pod_security() {
  cat <<YAML
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: $1
        runAsGroup: $1
        fsGroup: $1
        fsGroupChangePolicy: OnRootMismatch
        seccompProfile: {type: RuntimeDefault}
YAML
}
container_security='securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}'

# A one-replica StatefulSet with a 1 GiB claim at /data and a Service of the same name.
# Arguments: name uid port image container-lines...
stateful() {
  local name=$1 uid=$2 port=$3 image=$4
  shift 4
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: $name, namespace: shop}
spec:
  selector: {app: $name}
  ports: [{port: $port}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: $name, namespace: shop}
spec:
  serviceName: $name
  replicas: 1
  selector: {matchLabels: {app: $name}}
  template:
    metadata: {labels: {app: $name}}
    spec:
      terminationGracePeriodSeconds: 10
$(pod_security "$uid")
      containers:
      - name: $name
        image: $image
        imagePullPolicy: IfNotPresent
        ports: [{containerPort: $port}]
        readinessProbe: {tcpSocket: {port: $port}, periodSeconds: 2}
        $container_security
        volumeMounts: [{name: data, mountPath: /data}, {name: tmp, mountPath: /tmp}]
$(printf '        %s\n' "$@")
      volumes: [{name: tmp, emptyDir: {}}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
YAML
}
redis_env='env: [{name: REDIS_PASSWORD, valueFrom: {secretKeyRef: {name: redis-auth, key: password}}}]'
pg_env='env: [{name: PGDATA, value: /data/pgdata}, {name: POSTGRES_PASSWORD, valueFrom: {secretKeyRef: {name: pg-admin, key: password}}}]'
redis_command='command: [redis-server, --dir, /data, --bind, 0.0.0.0, --requirepass, $(REDIS_PASSWORD)]'
if [ -n "$services_image" ]; then
  # The image built here: Debian's redis-server (uid 998) and PostgreSQL 15 (uid 999), and
  # the tests' S3 server.
  stateful redis 998 6379 "$services_image" "$redis_command" "$redis_env"
  stateful pg 999 5432 "$services_image" 'command: [postgres-entrypoint]' "$pg_env"
  s3_container="image: $services_image
        command: [coffer-s3-server, backups]
        env: [{name: COFFER_S3_LISTEN, value: '0.0.0.0:9000'}, {name: COFFER_S3_ROOT, value: /data}]
        envFrom: [{secretRef: {name: s3-creds}}]"
  s3_ready='tcpSocket: {port: 9000}'
  make_bucket=0
else
  # Public images: Redis 7 and PostgreSQL 17 (both uid 999), MinIO and its client.
  stateful redis 999 6379 docker.io/library/redis:7.4 "$redis_command" "$redis_env"
  stateful pg 999 5432 docker.io/library/postgres:17 \
    'args: [-c, unix_socket_directories=/tmp]' "$pg_env"
  s3_container="image: quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z
        args: [server, /data]
        env:
        - {name: MINIO_ROOT_USER, valueFrom: {secretKeyRef: {name: s3-creds, key: AWS_ACCESS_KEY_ID}}}
        - {name: MINIO_ROOT_PASSWORD, valueFrom: {secretKeyRef: {name: s3-creds, key: AWS_SECRET_ACCESS_KEY}}}
        - {name: HOME, value: /tmp}"
  s3_ready='httpGet: {path: /minio/health/ready, port: 9000}'
  make_bucket=1
fi
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: minio, namespace: storage}
spec:
  selector: {app: minio}
  ports: [{port: 9000}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: minio, namespace: storage}
spec:
  selector: {matchLabels: {app: minio}}
  template:
    metadata: {labels: {app: minio}}
    spec:
$(pod_security 65532)
      containers:
      - name: s3
        $s3_container
        imagePullPolicy: IfNotPresent
        readinessProbe: {$s3_ready, periodSeconds: 2}
        $container_security
        volumeMounts: [{name: data, mountPath: /data}, {name: tmp, mountPath: /tmp}]
      volumes: [{name: data, emptyDir: {}}, {name: tmp, emptyDir: {}}]
YAML
for what in shop/statefulset/redis shop/statefulset/pg storage/deployment/minio; do
  kubectl -n "${what%%/*}" rollout status "${what#*/}" --timeout=300s >/dev/null || {
    pending=$(kubectl get pvc -n shop -o jsonpath='{range .items[?(@.status.phase=="Pending")]}{.metadata.name}{" "}{end}' 2>/dev/null)
    [ -z "$pending" ] || die "claims are not bound ($pending): the cluster needs a default StorageClass (or volumes made for them)"
    die "${what#*/} in namespace ${what%%/*} did not become ready; see kubectl -n ${what%%/*} describe ${what#*/}"
  }
done
mc_image=quay.io/minio/mc:RELEASE.2025-04-03T17-07-56Z
if [ "$make_bucket" = 1 ]; then
  kubectl -n storage delete pod make-bucket --ignore-not-found >/dev/null
  kubectl -n storage run make-bucket --restart=Never --quiet --rm -i --pod-running-timeout=5m \
    --image="$mc_image" --overrides='{"spec": {"automountServiceAccountToken": false,
      "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
      "containers": [{"name": "make-bucket", "image": "'"$mc_image"'",
        "command": ["sh", "-c", "mc --config-dir /tmp/mc alias set s3 http://minio:9000 \"$AWS_ACCESS_KEY_ID\" \"$AWS_SECRET_ACCESS_KEY\" >/dev/null && mc --config-dir /tmp/mc mb --ignore-existing s3/backups"],
        "envFrom": [{"secretRef": {"name": "s3-creds"}}],
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}' \
    </dev/null || die "could not create the bucket backups in MinIO; see kubectl -n storage logs deployment/minio"
fi

# --- 5. Sample data --------------------------------------------------------------------------
say "Sample data: Redis keys, PostgreSQL databases app and functions, files in a volume"
redis_sample | kubectl -n shop exec -i redis-0 -- redis-cli --no-auth-warning -a "$redis_password" >/dev/null \
  || die "cannot write to Redis; see kubectl -n shop logs redis-0"
echo "Redis: $(kubectl -n shop exec redis-0 -- redis-cli --no-auth-warning -a "$redis_password" DBSIZE) keys"
psql_in() { # database, SQL on stdin
  kubectl -n shop exec -i pg-0 -- env PGPASSWORD="$pg_admin_password" \
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d "$1" >/dev/null
}
psql_in postgres <<SQL || die "cannot set up PostgreSQL; see kubectl -n shop logs pg-0"
SELECT 'CREATE ROLE backup LOGIN SUPERUSER' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'backup')\gexec
ALTER ROLE backup PASSWORD '$pg_backup_password';
SQL
pg_databases_sample | psql_in postgres
pg_app_sample | psql_in app
pg_functions_sample | psql_in functions
echo "PostgreSQL: databases app (50 customers, 200 orders) and functions"
# The volume's files, written by a Pod of the Coffer image that mounts the claim.
kubectl -n platform delete pod seed-functions-data --ignore-not-found >/dev/null
kubectl -n platform run seed-functions-data --restart=Never --quiet --rm -i --pod-running-timeout=5m --image="$image" \
  --image-pull-policy="$pull_policy" --overrides='{"spec": {"automountServiceAccountToken": false,
    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "seed", "image": "'"$image"'", "imagePullPolicy": "'"$pull_policy"'",
      "command": ["bash", "-c", "cd /data && mkdir -p functions/resize-image functions/send-invoice && echo \"def handler(event): return 200\" > functions/resize-image/main.py && echo \"export const handler = async () => ({ ok: true });\" > functions/send-invoice/index.mjs && head -c 65536 /dev/zero > functions/resize-image/model.bin && find . -type f | wc -l"],
      "volumeMounts": [{"name": "data", "mountPath": "/data"}],
      "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "functions-data"}}]}}' \
  </dev/null | sed 's/^/Volume platform\/functions-data: files: /' \
  || die "cannot write the volume's files; see kubectl -n platform get events"

# --- 6. The examples -------------------------------------------------------------------------
say "Applying the example schedules, with the store's endpoint set and running every minute"
since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
every_minute='"schedule": "* * * * *"'
s3='"s3": {"endpoint": "http://minio.storage.svc:9000", "forcePathStyle": true}'
apply_patched deploy/examples/redis-schedule.yaml "{\"spec\": {$every_minute, \"storage\": {$s3}}}"
apply_patched deploy/examples/postgres-schedule.yaml "{\"spec\": {$every_minute, \"storage\": {$s3}}}"
apply_patched deploy/examples/volume-schedule.yaml "{\"spec\": {$every_minute}}"

cat <<EOF

==> Coffer is running in the cluster. In another terminal:

  $( [ "$mode" = real-node ] && echo 'eval "$(scripts/dev-cluster env)"      # KUBECONFIG and PATH (kubectl, helm)' )
  kubectl get coffer -A                    # schedules, backups and restores
  kubectl get backups -A --watch           # a new Backup of each schedule every minute
  kubectl -n shop describe backupschedule shop-redis
  kubectl -n $system_ns logs deployment/$release-controller
  kubectl -n shop logs -l app.kubernetes.io/managed-by=coffer   # the backup workers
EOF

show_results() {
  say "Backups in the cluster"
  kubectl get backups -A -o wide
}

keep_running() { # until Ctrl-C or TERM (checked every second; nothing is left behind)
  while :; do sleep 1; done
}
