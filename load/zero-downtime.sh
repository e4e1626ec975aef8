#!/usr/bin/env bash
# Zero-downtime check, by hand or in CI: while load/hammer.py sends GETs over keep-alive and new
# connections, (1) five config reloads happen, then (2) a graceful binary upgrade (a second
# process started with -u takes the listening socket, SIGQUIT to the old one). Passes when no
# request failed and the new process serves afterwards.
#
#   load/zero-downtime.sh          # release build; DEBUG=1 uses the debug build (faster to build);
#                                  # VALLUM_BIN=path skips building (CI passes the tested binary)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${VALLUM_BIN:-}" ]; then BIN=$VALLUM_BIN
elif [ "${DEBUG:-}" = 1 ]; then cargo build --locked --quiet; BIN=$PWD/target/debug/vallum
else cargo build --release --locked --quiet; BIN=$PWD/target/release/vallum; fi
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
fail() { echo "FAIL: $*"; for f in "$WORK"/*.log; do echo "== $f"; tail -20 "$f"; done; exit 1; }

# Upstream: the demo's whoami app (port D+2).
D=$(free_port)
"$BIN" demo --port "$D" >"$WORK/demo.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$((D+2))/" && break; sleep 0.1; done

P=$(free_port)
cat >"$WORK/pingora.yaml" <<YAML
version: 1
pid_file: $WORK/vallum.pid
upgrade_sock: $WORK/upgrade.sock
grace_period_seconds: 2
graceful_shutdown_timeout_seconds: 5
YAML
config() {
  cat >"$WORK/vallum.yaml.tmp" <<YAML
address: 127.0.0.1:$P
insecure_server: true
health_check_addr: ''
routes:
  - from: http://app.localhost:$P
    to: http://127.0.0.1:$((D+2))
    allow_public_unauthenticated_access: true
    set_request_headers:
      X-Config-Generation: "$1"
YAML
  mv "$WORK/vallum.yaml.tmp" "$WORK/vallum.yaml"
}
config 0
"$BIN" run -c "$WORK/vallum.yaml" --conf "$WORK/pingora.yaml" >"$WORK/old.log" 2>&1 & OLD=$!; PIDS+=($OLD)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$P/ping" && break; sleep 0.1; done

python3 load/hammer.py --addr "127.0.0.1:$P" --host "app.localhost:$P" --keepalive 4 --fresh 4 >"$WORK/reload.json" & H=$!
sleep 1
for gen in 1 2 3 4 5; do
  config "$gen"
  for _ in $(seq 50); do [ "$(grep -c 'config reloaded' "$WORK/old.log")" -ge "$gen" ] && break; sleep 0.1; done
  sleep 0.5
done
kill -TERM "$H"; wait "$H" || fail "requests failed during reloads: $(cat "$WORK/reload.json")"
[ "$(grep -c 'config reloaded' "$WORK/old.log")" -ge 5 ] || fail "not all reloads happened"
echo "five reloads under load: $(cat "$WORK/reload.json")"

python3 load/hammer.py --addr "127.0.0.1:$P" --host "app.localhost:$P" --keepalive 4 --fresh 4 >"$WORK/upgrade.json" & H=$!
sleep 1
"$BIN" run -u -c "$WORK/vallum.yaml" --conf "$WORK/pingora.yaml" >"$WORK/new.log" 2>&1 & NEW=$!; PIDS+=($NEW)
sleep 1
kill -QUIT "$OLD"
for _ in $(seq 100); do kill -0 "$OLD" 2>/dev/null || break; sleep 0.1; done
kill -0 "$OLD" 2>/dev/null && fail "the old process did not exit"
sleep 1
kill -TERM "$H"; wait "$H" || fail "requests failed during the upgrade: $(cat "$WORK/upgrade.json")"
echo "graceful upgrade under load: $(cat "$WORK/upgrade.json")"
kill -0 "$NEW" || fail "the new process is not running"
curl -sf -o /dev/null -H "Host: app.localhost:$P" "http://127.0.0.1:$P/" || fail "the new process does not serve"
echo "PASS: no failed request across 5 reloads and a binary upgrade; the new process (pid $NEW) serves"
