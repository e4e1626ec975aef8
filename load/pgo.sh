#!/usr/bin/env bash
# A profile-guided (PGO) release build of Vallum: an instrumented build serves a training load
# through the real gateway (a public route, a signed-in route with a 5-criterion policy and
# identity headers, the same with the access and authorize lines on, and the sign-in, deny and
# not-signed-in answers), then the release build is redone with that profile, so the compiler
# lays out the request path's hot code together and moves the cold branches out of it.
# The result is target/pgo/x86_64-unknown-linux-gnu/release/vallum (printed at the end);
# `BIN=that load/compare` and `BIN=that load/profile.sh` measure it. docs/performance.md has
# the figures.
#
#   load/pgo.sh                        # DURATION=4s per training target, PGO_DIR=target/pgo
#
# Needs the toolchain's llvm-profdata (`rustup component add llvm-tools`, fetched if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-4s}
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
command -v nginx >/dev/null || apt-get install -y -qq nginx >/dev/null
HOST=$(rustc -vV | awk '/^host:/ {print $2}')
PROFDATA=$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata
[ -x "$PROFDATA" ] || rustup component add llvm-tools >/dev/null
[ -x "$PROFDATA" ] || { echo "llvm-profdata not found at $PROFDATA (rustup component add llvm-tools)"; exit 1; }
PGO=${PGO_DIR:-$PWD/target/pgo}
rm -rf "$PGO/data"; mkdir -p "$PGO/data"
# `--target` keeps the flags off build scripts and proc macros, which would profile the build.
RUSTFLAGS="-Cprofile-generate=$PGO/data" cargo build --release --locked --quiet --target "$HOST" \
  --target-dir "$PGO/gen"
BIN=$PGO/gen/$HOST/release/vallum
source load/lib.sh

U=$(free_port); start_upstream "$U"
P=$(free_port_pair)
"$BIN" demo --port "$P" >"$WORK/demo.log" 2>&1 & DEMO=$!; PIDS+=($DEMO)
wait_http "http://127.0.0.1:$((P+1))/.well-known/openid-configuration"
printf 'threads: 1\n' >"$WORK/pingora.yaml"
train() { # LEVEL: one gateway at that log level, every kind of request, then a clean exit
  local ip=127.0.0.$1 level=$2 pid cookie
  { demo_signin_yaml "$ip:$P" "$P" | sed "s/^log_level: warn$/log_level: $level/"
    bench_routes "$P" "$U"; cat <<YAML
  - from: http://admins.localhost:$P
    to: http://127.0.0.1:$U
    policy:
      allow:
        and:
          - groups: {has: nobody}
YAML
  } >"$WORK/v$1.yaml"
  "$BIN" run -c "$WORK/v$1.yaml" --conf "$WORK/pingora.yaml" >"$WORK/v$1.log" 2>&1 & pid=$!; PIDS+=($pid)
  wait_http "http://$ip:$P/ping"
  for _ in $(seq 50); do grep -q "identity provider discovered" "$WORK/v$1.log" && break; sleep 0.1; done
  cookie=$(python3 load/signin.py --url "http://app.localhost:$P/" --ip "$ip" --user alice)
  wrk -t1 -c32 -d"$DURATION" -H "Host: public.localhost:$P" "http://$ip:$P/" >/dev/null
  wrk -t1 -c32 -d"$DURATION" -H "Host: app.localhost:$P" -H "Cookie: $cookie" "http://$ip:$P/" >/dev/null
  wrk -t1 -c8 -d1s -H "Host: app.localhost:$P" "http://$ip:$P/" >/dev/null
  wrk -t1 -c8 -d1s -H "Host: admins.localhost:$P" -H "Cookie: $cookie" "http://$ip:$P/" >/dev/null
  # SIGINT: Pingora's fast shutdown, an orderly exit that writes the profile.
  kill -INT "$pid"; wait "$pid" || true
}
train 2 warn
train 3 info
kill -INT "$DEMO"; wait "$DEMO" || true
ls "$PGO"/data/*.profraw >/dev/null 2>&1 || { echo "the training wrote no profile"; exit 1; }
"$PROFDATA" merge -o "$PGO/vallum.profdata" "$PGO"/data/*.profraw
RUSTFLAGS="-Cprofile-use=$PGO/vallum.profdata" cargo build --release --locked --quiet --target "$HOST" \
  --target-dir "$PGO"
echo "$PGO/$HOST/release/vallum"
