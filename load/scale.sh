#!/usr/bin/env bash
# Vallum at scale: for 10 and 100,000 routes, the time from start to ready, RSS when ready,
# requests/s and CPU per request on a route in the middle of the table, and the time to reload
# the whole config (SIGHUP). Session memory per session is `cargo bench --bench session_memory`.
#
#   load/scale.sh                  # ROUTES="10 100000" DURATION=6s CONNS=32
set -euo pipefail
cd "$(dirname "$0")/.."
ROUTES=${ROUTES:-"10 100000"}; DURATION=${DURATION:-6s}; CONNS=${CONNS:-32}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx)
[ ${#need[@]} -eq 0 ] || apt-get install -y -qq "${need[@]}" >/dev/null
cargo build --release --locked --quiet
BIN=$PWD/target/release/vallum
source load/lib.sh
PIN0=""; PIN1=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN0="taskset -c 0"; PIN1="taskset -c 1"; fi
clk=$(getconf CLK_TCK)

U=$(free_port)
start_upstream "$U" $PIN1

printf '%-8s %12s %10s %12s %14s %12s\n' routes ready_ms rss_MiB req_per_s cpu_us_per_req reload_ms
for n in $ROUTES; do
  P=$(free_port)
  python3 - "$n" "$P" "$U" >"$WORK/r$n.yaml" <<'PY'
import sys
n, port, up = int(sys.argv[1]), sys.argv[2], sys.argv[3]
print(f"address: 127.0.0.1:{port}\ninsecure_server: true\nhealth_check_addr: ''\nthreads: 1\nlog_level: warn\nroutes:")
for i in range(n // 2):
    for extra in ("    prefix: /api/\n", ""):
        print(f"  - from: http://app{i}.example.com\n{extra}    to: http://127.0.0.1:{up}\n    allow_public_unauthenticated_access: true")
PY
  start=$(date +%s%N)
  VALLUM_LOG="warn,vallum::reload=info" $PIN0 "$BIN" run -c "$WORK/r$n.yaml" >"$WORK/r$n.log" 2>&1 & VP=$!; PIDS+=($VP)
  until curl -sf -o /dev/null "http://127.0.0.1:$P/ping"; do sleep 0.01; done
  ready_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/$VP/status)
  host="app$((n / 4)).example.com"
  curl -sf -o /dev/null -H "Host: $host" "http://127.0.0.1:$P/api/x" || { echo "route lookup failed"; exit 1; }
  t0=$(awk '{print $14+$15}' /proc/$VP/stat)
  out=$($PIN1 wrk -t1 -c"$CONNS" -d"$DURATION" -H "Host: $host" "http://127.0.0.1:$P/api/x")
  t1=$(awk '{print $14+$15}' /proc/$VP/stat)
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
  cpu=$(python3 -c "print(f'{($t1-$t0)/$clk*1e6/max($reqs,1):.1f}')")
  echo "# touched" >>"$WORK/r$n.yaml"
  kill -HUP $VP
  reload=""
  for _ in $(seq 600); do
    reload=$(grep -o '"elapsed_ms":[0-9.]*' "$WORK/r$n.log" | tail -1 | cut -d: -f2) || true
    [ -n "$reload" ] && break
    sleep 0.1
  done
  printf '%-8s %12s %10s %12s %14s %12.0f\n' "$n" "$ready_ms" "$rss" "$rps" "$cpu" "${reload:-0}"
  kill -INT $VP; wait $VP 2>/dev/null || true  # SIGINT: quick exit (SIGTERM waits out a 300 s grace period)
done
echo "machine: $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ //'); $(date -u +%Y-%m-%d)"
