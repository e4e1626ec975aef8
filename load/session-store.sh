#!/usr/bin/env bash
# Authorised requests per second through one Vallum node, by session store, side by side:
#   memory         the embedded store
#   redis          Redis store, warm local cache (databroker_cache_ttl: 1s, the default)
#   redis-nocache  Redis store, local cache off (databroker_cache_ttl: 0s): one GET per request
#   file           the local database (databroker_storage_type: file), warm local cache
#   file-nocache   the local database, cache off: one SQLite read per request
#   postgres       PostgreSQL store (a private server), warm local cache
#   postgres-nocache  PostgreSQL store, cache off: one SELECT per request
# Sessions come from the real sign-in flow against `vallum demo`'s identity provider
# (load/signin.py), never from forged cookies. Rounds are interleaved so machine noise hits every
# variant alike; the table shows medians, CPU time per request and ratios to `memory`.
#
#   load/session-store.sh            # ROUNDS=5 DURATION=10s CONNS=32 by default
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}

command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null; }
command -v redis-server >/dev/null || { echo "redis-server is needed (apt-get install redis-server)"; exit 1; }
cargo build --release --locked --quiet
BIN=$PWD/target/release/vallum
source load/lib.sh

# The demo gives us the identity provider (P+1) and the upstream app (P+2); its own gateway on
# 127.0.0.1:P is not measured. Each measured gateway listens on its own 127.0.0.x:P so the
# sign-in redirect URI (authenticate.localhost:P) is the one the demo IdP accepts.
P=$(free_port_pair)
"$BIN" demo --port "$P" >"$WORK/demo.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$((P+1))/.well-known/openid-configuration"
R=$(free_port)
redis-server --port "$R" --bind 127.0.0.1 --save "" --appendonly no >/dev/null & PIDS+=($!)
sleep 0.3
PG=$(free_port)
start_postgres "$PG"
printf 'threads: 1\n' >"$WORK/pingora.yaml"

VARIANTS=(${VARIANTS:-memory redis redis-nocache file file-nocache postgres postgres-nocache})
declare -A IP PID COOKIE
i=2
for v in "${VARIANTS[@]}"; do
  IP[$v]=127.0.0.$i; i=$((i+1))
  case $v in
    memory) store="" ;;
    redis) store="databroker_storage_type: redis
databroker_storage_connection_string: redis://127.0.0.1:$R/
databroker_storage_key_prefix: 'load-$v:'" ;;
    redis-nocache) store="databroker_storage_type: redis
databroker_storage_connection_string: redis://127.0.0.1:$R/
databroker_storage_key_prefix: 'load-$v:'
databroker_cache_ttl: 0s" ;;
    file) store="databroker_storage_type: file
databroker_storage_connection_string: file://$WORK/db-$v" ;;
    file-nocache) store="databroker_storage_type: file
databroker_storage_connection_string: file://$WORK/db-$v
databroker_cache_ttl: 0s" ;;
    postgres) store="databroker_storage_type: postgres
databroker_storage_connection_string: postgres://postgres@127.0.0.1:$PG/postgres" ;;
    postgres-nocache) store="databroker_storage_type: postgres
databroker_storage_connection_string: postgres://postgres@127.0.0.1:$PG/postgres
databroker_cache_ttl: 0s" ;;
  esac
  { demo_signin_yaml "${IP[$v]}:$P" "$P"; cat <<YAML
pass_identity_headers: true
$store
routes:
  - from: http://app.localhost:$P
    to: http://127.0.0.1:$((P+2))
$AUTH_POLICY
YAML
  } >"$WORK/$v.yaml"
  VALLUM_LOG=warn "$BIN" run -c "$WORK/$v.yaml" --conf "$WORK/pingora.yaml" >"$WORK/$v.log" 2>&1 & PID[$v]=$!
  PIDS+=(${PID[$v]})
  wait_http "http://${IP[$v]}:$P/ping"
  for _ in $(seq 50); do grep -q "identity provider discovered" "$WORK/$v.log" && break; sleep 0.1; done
  COOKIE[$v]=$(python3 load/signin.py --url "http://app.localhost:$P/" --ip "${IP[$v]}" --user alice)
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: app.localhost:$P" -H "Cookie: ${COOKIE[$v]}" "http://${IP[$v]}:$P/")
  [ "$code" = 200 ] || { echo "$v: signed-in request got $code"; cat "$WORK/$v.log"; exit 1; }
done

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
declare -A RPS P99 CPU
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "rounds: $ROUNDS x $DURATION, $CONNS connections, gateway threads: 1"
for round in $(seq "$ROUNDS"); do
  for v in "${VARIANTS[@]}"; do
    before=$(cpu_ticks "${PID[$v]}")
    out=$(wrk -t1 -c"$CONNS" -d"$DURATION" --latency -H "Host: app.localhost:$P" -H "Cookie: ${COOKIE[$v]}" "http://${IP[$v]}:$P/")
    after=$(cpu_ticks "${PID[$v]}")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    # p99 in ms, whatever unit wrk printed it in.
    p99=$(awk '$1=="99%" {v=$2; u=v; gsub(/[0-9.]/,"",u); sub(/[a-z]+$/,"",v);
      print (u=="us" ? v/1000 : (u=="s" ? v*1000 : v))}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    [ -z "$non2xx" ] || { echo "$v: $non2xx non-2xx responses"; exit 1; }
    cpu=$(python3 -c "print(round(($after-$before)/$TICK*1e6/$total, 1))")
    RPS[$v]+="$rps "; P99[$v]+="$p99 "; CPU[$v]+="$cpu "
    echo "round $round $v: $rps req/s, p99 ${p99}ms, $cpu µs CPU/request"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
base=$(median <<<"${RPS[memory]}")
basecpu=$(median <<<"${CPU[memory]}")
echo
echo "| store | requests/s (median) | ratio | p99 ms (median) | CPU µs/request | CPU ratio |"
echo "|---|---|---|---|---|---|"
for v in "${VARIANTS[@]}"; do
  r=$(median <<<"${RPS[$v]}"); c=$(median <<<"${CPU[$v]}")
  p=$(median <<<"${P99[$v]}")
  printf '| %s | %.0f | %.3f | %s | %s | %.3f |\n' "$v" "$r" "$(python3 -c "print($r/$base)")" "$p" "$c" "$(python3 -c "print($c/$basecpu)")"
done
