#!/usr/bin/env bash
# Instruction counts per request, by function, for Vallum's public and authenticated paths (logs
# off, and the authenticated one with its access and authorize lines on) and
# for the raw Pingora proxy, under `valgrind --tool=callgrind`. Counts do not depend on what else
# the machine is doing, so two builds can be compared on a noisy machine.
#
#   load/profile.sh                 # REQUESTS=4000 TOP=40 [BIN=another build] [KEEP=dir for the dumps]
#
# Each target runs alone under callgrind; the counters are zeroed after a warm-up, then REQUESTS
# requests go through one keep-alive connection (curl), and the dump is divided by REQUESTS.
# Sessions come from the real sign-in against `vallum demo`'s identity provider (load/signin.py).
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-4000}; TOP=${TOP:-40}
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
command -v nginx >/dev/null || apt-get install -y -qq nginx-light >/dev/null
# BIN=/path/to/vallum profiles another build (an older commit's, side by side) as it is.
[ -n "${BIN:-}" ] || cargo build --release --locked --quiet
cargo build --release --quiet --manifest-path load/raw-pingora/Cargo.toml
BIN=${BIN:-$PWD/target/release/vallum}
RAW=$PWD/load/raw-pingora/target/release/raw-pingora
source load/lib.sh
export WAIT_TRIES=600 # valgrind starts slowly

U=$(free_port)
start_upstream "$U"
P=$(free_port_pair)
"$BIN" demo --port "$P" >"$WORK/demo.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$((P+1))/.well-known/openid-configuration"
printf 'threads: 1\n' >"$WORK/pingora.yaml"
{ demo_signin_yaml "127.0.0.2:$P" "$P"; bench_routes "$P" "$U"; } >"$WORK/vallum.yaml"

# Self cost per request by function (inlined code counts to the function it was inlined into).
per_function() {
  callgrind_annotate --threshold=100 --inclusive=no --auto=no "$1" 2>/dev/null | python3 -c '
import re, sys, collections
n, top = int(sys.argv[1]), int(sys.argv[2])
cost = collections.Counter()
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S.*)", line)
    if not m or "PROGRAM TOTALS" in line:
        continue
    name = re.sub(r"\s*\[[^\]]*\]\s*$", "", m.group(2))
    name = re.sub(r"^(\?\?\?|[^ ]*?\.(rs|c|S|h)):", "", name)
    cost[name] += int(m.group(1).replace(",", ""))
# Thread entry points carry the whole program: the functions under them are what counts.
total = max(cost.values(), default=0)
rows = [(name, c) for name, c in cost.most_common() if c < 0.9 * total]
for name, c in rows[:top]:
    print(f"{c // n:>8}  {name[:150]}")
' "$REQUESTS" "$TOP"
}

# $1 name, $2 url, $3 Host, $4 cookie ("signin": sign in first), then the command to profile.
profile() {
  local name=$1 url=$2 host=$3 cookie=$4; shift 4
  local out=$WORK/$name.cg
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$WORK/$name.log" 2>&1 &
  local pid=$!; PIDS+=($pid)
  # /ping answers once the listener is up (a signed-in route redirects only once the IdP is known).
  wait_http "${url%/}/ping" "$host"
  if [ "$cookie" = signin ]; then
    # The gateway discovers the IdP in the background (slowly under valgrind): retry sign-in.
    for _ in $(seq 60); do
      cookie=$(python3 load/signin.py --url "http://$host/" --ip 127.0.0.2 --user alice 2>/dev/null) && break
      sleep 1
    done
  fi
  # Warm-up (connection pools, caches), then count only the measured requests.
  curl -s -o /dev/null ${cookie:+-H "Cookie: $cookie"} -H "Host: $host" "$url?[1-200]"
  callgrind_control -z "$pid" >/dev/null 2>&1
  local codes
  codes=$(curl -s ${cookie:+-H "Cookie: $cookie"} -H "Host: $host" -w '%{http_code}\n' -o /dev/null "$url?[1-$REQUESTS]" | sort | uniq -c)
  sleep 0.2 # the log writer drains its queue every 10 ms: its share is counted too
  callgrind_control -d "$pid" >/dev/null 2>&1
  # The counts are dumped: no need to wait out a graceful shutdown under valgrind.
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  local dump total
  dump=$(ls -t "$out".* | head -1)
  total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
  echo "== $name: $((total / REQUESTS)) instructions per request (status counts: $(echo $codes))"
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cp "$dump" "$KEEP/$name.cg"; fi
  per_function "$dump"
}

R=$(free_port)
profile raw-pingora "http://127.0.0.1:$R/" x "" "$RAW" "127.0.0.1:$R" "127.0.0.1:$U" 1
# Not `env VALLUM_LOG=… vallum`: valgrind would profile `env`, which execs Vallum unprofiled.
export VALLUM_LOG=warn
profile vallum-public "http://127.0.0.2:$P/" "public.localhost:$P" "" \
  "$BIN" run -c "$WORK/vallum.yaml" --conf "$WORK/pingora.yaml"
profile vallum-auth "http://127.0.0.2:$P/" "app.localhost:$P" signin \
  "$BIN" run -c "$WORK/vallum.yaml" --conf "$WORK/pingora.yaml"
# The same at the default log level: an access and an authorize line per request, to a file.
sed 's/^log_level: warn$/log_level: info/' "$WORK/vallum.yaml" >"$WORK/vallum-logged.yaml"
unset VALLUM_LOG
profile vallum-logged "http://127.0.0.2:$P/" "app.localhost:$P" signin \
  "$BIN" run -c "$WORK/vallum-logged.yaml" --conf "$WORK/pingora.yaml"
