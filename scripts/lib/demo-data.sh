# What both ways of scripts/demo share: Secrets and patched examples applied idempotently,
# and the sample data (the same in both, so that their backups can be compared).

# A Secret from literal key=value pairs, created or updated.
secret() { # namespace name key=value...
  local ns=$1 name=$2 args=()
  shift 2
  for kv in "$@"; do args+=(--from-literal="$kv"); done
  kubectl -n "$ns" create secret generic "$name" "${args[@]}" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
}

# An example file with a merge patch applied locally (kubectl patch --local), so that a re-run
# never puts the original values back, not even for a moment.
apply_patched() { # file merge-patch
  kubectl patch --local --type merge -f "$1" -p "$2" -o yaml | kubectl apply -f -
}

# Redis: 30 strings, 3 hashes, a list, a set and a sorted set (overwritten on a re-run), as
# redis-cli commands.
redis_sample() {
  for i in $(seq 1 30); do echo "SET demo:greeting:$i \"hello number $i\""; done
  for i in 1 2 3; do echo "HSET demo:customer:$i name \"Customer $i\" email customer$i@example.com tier gold"; done
  echo "DEL demo:orders"
  echo "RPUSH demo:orders order-1001 order-1002 order-1003 order-1004"
  echo "SADD demo:tags backup restore kubernetes redis postgres"
  echo "ZADD demo:leaderboard 120 alice 95 bob 87 carol"
}

# PostgreSQL: the databases app and functions (CREATE DATABASE has no IF NOT EXISTS, hence
# \gexec), then their tables; rows have fixed ids. Each prints SQL for psql.
pg_databases_sample() {
  cat <<'SQL'
SELECT format('CREATE DATABASE %I', d) FROM unnest(ARRAY['app', 'functions']) AS d
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = d)\gexec
SQL
}
pg_app_sample() {
  cat <<'SQL'
CREATE TABLE IF NOT EXISTS customers (id int PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE IF NOT EXISTS orders (
  id int PRIMARY KEY, customer_id int REFERENCES customers, total numeric(10,2), placed timestamptz);
INSERT INTO customers SELECT i, 'Customer ' || i, 'customer' || i || '@example.com'
  FROM generate_series(1, 50) AS i ON CONFLICT DO NOTHING;
INSERT INTO orders SELECT i, 1 + i % 50, (i * 7 % 100) + 0.99, now() - i * interval '1 hour'
  FROM generate_series(1, 200) AS i ON CONFLICT DO NOTHING;
SQL
}
pg_functions_sample() {
  cat <<'SQL'
CREATE TABLE IF NOT EXISTS functions (name text PRIMARY KEY, runtime text, source text);
INSERT INTO functions VALUES
  ('resize-image', 'python3.12', 'def handler(event): ...'),
  ('send-invoice', 'node22', 'export const handler = async (event) => {}'),
  ('nightly-report', 'go1.24', 'func Handle(ctx context.Context) error { return nil }')
  ON CONFLICT DO NOTHING;
SQL
}
