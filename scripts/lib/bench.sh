# Shared by the scripts/bench-* benchmarks (sourced, not run): release builds, a work
# directory removed on exit, background servers stopped on exit, the local S3 server, and
# timing with peak RSS.
#
# Expects: $bench (the benchmark's name, for messages) and $runs (repetitions per command).

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
scripts/install-test-deps --bench >&2
echo "$bench: building release binaries" >&2
cargo build --release --quiet --bin coffer
cargo build --release --quiet -p coffer-testenv --bin coffer-s3-server
coffer=$PWD/target/release/coffer

work=$(mktemp -d "${TMPDIR:-/tmp}/coffer-$bench-XXXXXX")
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts the local S3 server with a bucket "bench"; sets $s3_env (VAR=value words for env).
start_s3() {
  target/release/coffer-s3-server bench >"$work/s3.env" &
  pids+=($!)
  until grep -q ready "$work/s3.env" 2>/dev/null; do sleep 0.1; done
  s3_env=$(grep '^export' "$work/s3.env" | sed 's/^export //')
}

# Runs a command $runs times after emptying $work/out; prints "median_seconds max_rss_kib".
measure() {
  local times=() rss=0 t m
  for _ in $(seq "$runs"); do
    rm -rf "$work/out" && mkdir -p "$work/out"
    if ! /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>"$work/err"; then
      echo "$bench: $* failed:" >&2
      cat "$work/err" >&2
      exit 1
    fi
    read -r t m <"$work/time"
    times+=("$t")
    [ "$m" -gt "$rss" ] && rss=$m
  done
  printf '%s %s\n' "$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p")" "$rss"
}

# The size of a directory's files in MiB.
mib() {
  du -sb "$1" | awk '{ printf "%.1f MiB", $1 / 1048576 }'
}

# What the newest backup at a coffer destination stored ($s3_env applies).
stored() {
  # shellcheck disable=SC2086
  env $s3_env "$coffer" list "$1" --output json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.1f MiB" % (r[0]["storedBytes"] / 1048576) if r else "-")'
}
