# scripts/demo on the process-based dev-cluster (sourced by scripts/demo): Redis, PostgreSQL
# and the S3 server run on 127.0.0.1, the operator runs on this machine as the chart's
# ServiceAccount, and worker Pods run as processes of a stand-in kubelet.

log=$demo/controller.log
coffer=$PWD/target/debug/coffer
controller_pid=
source scripts/lib/demo-data.sh

operator_alive() { kill -0 "$controller_pid" 2>/dev/null; }
operator_log() { tail -n "$1" "$log"; }
log_hint=$log

stop_mode() {
  if [ -n "$controller_pid" ] && kill -0 "$controller_pid" 2>/dev/null; then
    echo "scripts/demo: stopping the operator (pid $controller_pid)" >&2
    kill -TERM "$controller_pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$controller_pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$controller_pid" 2>/dev/null || true
  fi
  [ -z "$controller_pid" ] || rm -f "$demo/controller.pid"
  if [ "$started_cluster" = 1 ]; then
    scripts/dev-cluster down || true
  elif [ -n "${KUBECONFIG:-}" ]; then
    echo "scripts/demo: the dev-cluster was already running; it keeps running (scripts/dev-cluster down stops it)" >&2
  fi
}

# A second demo would fight this one over the Lease and the cleanup.
if [ -f "$demo/controller.pid" ]; then
  old=$(cat "$demo/controller.pid")
  if kill -0 "$old" 2>/dev/null && tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null | grep -q 'coffer controller'; then
    die "another demo's operator is still running (pid $old); stop that demo with Ctrl-C (or: kill $old), then run scripts/demo again"
  fi
fi

# --- 1. The local cluster --------------------------------------------------------------------
if scripts/dev-cluster env >/dev/null 2>&1; then
  scripts/dev-cluster env 2>/dev/null | grep -q '^export COFFER_IMAGE=' \
    && die "the running dev-cluster has a real node; run scripts/demo --real-node, or stop it first (scripts/dev-cluster down)"
  say "Reusing the running dev-cluster (it stays up when the demo ends)"
else
  say "Starting the dev-cluster (the first run installs packages and builds; that takes a while)"
  started_cluster=1
  scripts/dev-cluster up >/dev/null || die "scripts/dev-cluster up failed (its error is above; its log is .cache/dev-cluster/log); fix that and run scripts/demo again"
fi
eval "$(scripts/dev-cluster env)"
ready_at=$SECONDS
kubectl get --raw /readyz >/dev/null || die "the API server does not answer; see .cache/dev-cluster/log, or restart it: scripts/dev-cluster down && scripts/demo"
command -v redis-cli >/dev/null || die "redis-cli is missing; run scripts/install-test-deps"
command -v psql >/dev/null || die "psql is missing; run scripts/install-test-deps"

# --- 2. Sample data --------------------------------------------------------------------------
say "Sample data: Redis keys, PostgreSQL databases app and functions, files in a volume"
redis_sample | redis-cli --no-auth-warning -h 127.0.0.1 -p "$REDIS_PORT" -a "$REDIS_PASSWORD" >/dev/null \
  || die "cannot write to Redis on port $REDIS_PORT; see .cache/dev-cluster/log"
echo "Redis: $(redis-cli --no-auth-warning -h 127.0.0.1 -p "$REDIS_PORT" -a "$REDIS_PASSWORD" DBSIZE) keys"
sql() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 "$@" >/dev/null; }
pg_databases_sample | sql -d postgres
pg_app_sample | sql -d app
pg_functions_sample | sql -d functions
echo "PostgreSQL: app has $(psql -X -At -d app -c 'SELECT count(*) FROM orders') orders," \
  "functions has $(psql -X -At -d functions -c 'SELECT count(*) FROM functions') functions"

# The namespaces of the examples, and the two claims of the volume example. They stay
# Pending (there is no storage provisioner); the process kubelet mounts the host directory
# $COFFER_DEV_VOLUMES/<namespace>/<claim> anyway.
for ns in shop platform; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
done
for claim in functions-data backup-store; do
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $claim, namespace: platform}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
YAML
done
data=$COFFER_DEV_VOLUMES/platform/functions-data
mkdir -p "$data/functions/resize-image" "$data/functions/send-invoice" "$COFFER_DEV_VOLUMES/platform/backup-store"
echo 'def handler(event): return {"status": 200}' >"$data/functions/resize-image/main.py"
echo 'export const handler = async () => ({ ok: true });' >"$data/functions/send-invoice/index.mjs"
printf '{"functions": ["resize-image", "send-invoice"]}\n' >"$data/manifest.json"
head -c 65536 /dev/zero >"$data/functions/resize-image/model.bin"
echo "Volume platform/functions-data: $(find "$data" | wc -l) files and directories in $data"

# --- 3. The chart's CRDs, namespace, ServiceAccount, RBAC, Lease and admission policy ---------
say "Installing the chart's CRDs, namespace coffer-system, ServiceAccount, RBAC, Lease and the admission policy on the operator's Jobs"
kubectl apply --server-side -f charts/coffer/crds/ >/dev/null
kubectl wait --for condition=Established --timeout=60s -f charts/coffer/crds/ >/dev/null
kubectl apply -f deploy/namespace.yaml >/dev/null
helm template coffer charts/coffer --namespace coffer-system --kube-version 1.34.0 \
  --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml \
  --show-only templates/lease.yaml --show-only templates/admissionpolicy.yaml | kubectl apply -f -

# --- 4. The operator, as the chart's ServiceAccount ------------------------------------------
say "Starting the operator (target/debug/coffer controller) as ServiceAccount coffer-system/coffer-controller"
cargo build --quiet --bin coffer || die "cargo build --bin coffer failed; fix the build error above and run scripts/demo again"
# The admin kubeconfig with its user's token swapped for one of the controller's ServiceAccount.
kubeconfig=$demo/kubeconfig
install -m 600 "$KUBECONFIG" "$kubeconfig"
user=$(kubectl config view --minify -o jsonpath='{.contexts[0].context.user}')
token=$(kubectl -n coffer-system create token coffer-controller --duration=24h)
kubectl --kubeconfig "$kubeconfig" config set-credentials "$user" --token="$token" >/dev/null
echo "kubeconfig $kubeconfig is $(kubectl --kubeconfig "$kubeconfig" auth whoami -o jsonpath='{.status.userInfo.username}')"
# The first free port from 18080 for /metrics, /healthz and /readyz.
port=18080
while (: >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
metrics=http://127.0.0.1:$port
# Backups created from now on are this operator's (older ones, from an earlier run, do not count).
since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
NO_COLOR=1 KUBECONFIG=$kubeconfig setsid "$coffer" controller --metrics-address "127.0.0.1:$port" \
  --lease-namespace coffer-system >"$log" 2>&1 </dev/null &
controller_pid=$!
echo "$controller_pid" >"$demo/controller.pid"
for _ in $(seq 1 60); do
  curl -fsS "$metrics/readyz" >/dev/null 2>&1 && break
  kill -0 "$controller_pid" 2>/dev/null || { tail -n 20 "$log" >&2; die "the operator exited at start; its log is above and in $log"; }
  sleep 0.5
done
curl -fsS "$metrics/readyz" >/dev/null 2>&1 || die "the operator is not ready after 30s; see $log"
echo "operator pid $controller_pid, log $log, metrics $metrics/metrics"

# --- 5. Secrets and the three example schedules, pointed at the local services ----------------
say "Applying the example schedules, patched for this machine and to run every minute"
secret shop redis-auth "password=$REDIS_PASSWORD"
secret shop pg-auth "password=$PGPASSWORD"
secret shop s3-creds "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
# The examples name in-cluster hosts (redis.shop.svc, pg.shop.svc, minio) that do not resolve
# here: each file is patched to the local services.
s3="\"s3\": {\"endpoint\": \"$AWS_ENDPOINT_URL\", \"forcePathStyle\": true, \"region\": \"$AWS_REGION\"}"
every_minute='"schedule": "* * * * *"'
apply_patched deploy/examples/redis-schedule.yaml "{\"spec\": {$every_minute,
  \"source\": {\"redis\": {\"host\": \"127.0.0.1\", \"port\": $REDIS_PORT}}, \"storage\": {$s3}}}"
apply_patched deploy/examples/postgres-schedule.yaml "{\"spec\": {$every_minute,
  \"source\": {\"postgres\": {\"host\": \"127.0.0.1\", \"port\": $PGPORT, \"user\": \"$PGUSER\"}},
  \"storage\": {$s3}}}"
apply_patched deploy/examples/volume-schedule.yaml "{\"spec\": {$every_minute}}"

# --- 6. Where to look ----------------------------------------------------------------------
cat <<EOF

==> Coffer is running. In another terminal, from $PWD:

  eval "\$(scripts/dev-cluster env)"      # KUBECONFIG, PATH (kubectl, helm), AWS_*, REDIS_*, PG*
  kubectl get coffer -A                    # schedules, backups and restores
  kubectl get backups -A --watch           # a new Backup of each schedule every minute
  kubectl -n shop describe backupschedule shop-redis
  target/debug/coffer list s3://$COFFER_DEV_BUCKET/prod/     # Redis and PostgreSQL backups in S3
  target/debug/coffer list \$COFFER_DEV_VOLUMES/platform/backup-store   # the volume's backups
  curl -s $metrics/metrics | grep ^coffer_
  tail -f $log

  (\$COFFER_DEV_VOLUMES is $COFFER_DEV_VOLUMES)
EOF

show_results() {
  say "coffer list s3://$COFFER_DEV_BUCKET/prod/"
  "$coffer" list "s3://$COFFER_DEV_BUCKET/prod/"
  say "coffer list $COFFER_DEV_VOLUMES/platform/backup-store"
  "$coffer" list "$COFFER_DEV_VOLUMES/platform/backup-store"
  say "The operator's metrics: curl -s $metrics/metrics | grep ^coffer_backups_total"
  curl -fsS "$metrics/metrics" | grep '^coffer_backups_total' || true
}

keep_running() {
  wait "$controller_pid" || true
  tail -n 30 "$log" >&2
  die "the operator stopped on its own; its log is above and in $log"
}
