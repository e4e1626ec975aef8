#!/usr/bin/env bash
# Two Vallum builds side by side, interleaved: the signed-in route (5-criterion policy, identity
# headers) through each build with logs off and with its access and authorize lines on (stderr to
# a file), four gateways pinned to core 0, wrk on core 1. CPU per request from /proc/<pid>/stat,
# each round's B/A ratios paired, then the medians (the log writer thread's share shown apart): runs of load/compare one after another move
# by more than a change between two builds does.
#
#   A=/path/to/before B=/path/to/after load/ab.sh    # ROUNDS=5 DURATION=6s
set -euo pipefail
cd "$(dirname "$0")/.."
: "${A:?A=the first build}" "${B:?B=the second build}"
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-6s}; CONNS=32
source load/lib.sh
U=$(free_port); start_upstream "$U" taskset -c 1
P=$(free_port_pair)
"$A" demo --port "$P" >"$WORK/demo.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$((P+1))/.well-known/openid-configuration"
printf 'threads: 1\n' >"$WORK/pingora.yaml"
declare -A IP VPID BINOF LOG CK
i=2
for v in a-off a-on b-off b-on; do
  IP[$v]=127.0.0.$i; i=$((i+1))
  b=$A; [[ $v == b-* ]] && b=$B
  { demo_signin_yaml "${IP[$v]}:$P" "$P"; bench_routes "$P" "$U"; } >"$WORK/$v.yaml"
  if [[ $v == *-on ]]; then
    sed -i 's/^log_level: warn$/log_level: info/' "$WORK/$v.yaml"
    taskset -c 0 "$b" run -c "$WORK/$v.yaml" --conf "$WORK/pingora.yaml" >"$WORK/$v.log" 2>&1 & VPID[$v]=$!
  else
    VALLUM_LOG=warn taskset -c 0 "$b" run -c "$WORK/$v.yaml" --conf "$WORK/pingora.yaml" >"$WORK/$v.log" 2>&1 & VPID[$v]=$!
  fi
  PIDS+=(${VPID[$v]})
  wait_http "http://${IP[$v]}:$P/ping"
done
sleep 2
for v in a-off a-on b-off b-on; do
  for _ in $(seq 30); do CK[$v]=$(python3 load/signin.py --url "http://app.localhost:$P/" --ip "${IP[$v]}" --user alice 2>/dev/null) && break; sleep 0.5; done
done
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
# The log writer thread's share (thread name vallum-log): what writing the lines out costs, apart
# from what building them costs the request's thread.
writer() {
  local t sum=0
  for t in /proc/$1/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = vallum-log ] && sum=$((sum + $(awk '{print $14+$15}' "$t/stat")))
  done
  echo "$sum"
}
declare -A RPS CPU WCPU
for r in $(seq "$ROUNDS"); do
  for v in a-off a-on b-off b-on; do
    before=$(cpu "${VPID[$v]}"); wbefore=$(writer "${VPID[$v]}")
    out=$(taskset -c 1 wrk -t1 -c$CONNS -d"$DURATION" -H "Host: app.localhost:$P" -H "Cookie: ${CK[$v]}" "http://${IP[$v]}:$P/")
    after=$(cpu "${VPID[$v]}"); wafter=$(writer "${VPID[$v]}")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    grep -q "Non-2xx" <<<"$out" && { echo "$v non-2xx"; exit 1; }
    RPS[$v]+="$(awk '/Requests\/sec/ {print $2}' <<<"$out") "
    CPU[$v]+="$(python3 -c "print(round(($after-$before)/100*1e6/$total, 2))") "
    WCPU[$v]+="$(python3 -c "print(round(($wafter-$wbefore)/100*1e6/$total, 2))") "
  done
done
for v in a-off a-on b-off b-on; do echo "$v rps: ${RPS[$v]} cpu: ${CPU[$v]} of which the log writer thread: ${WCPU[$v]}"; done
python3 - "${CPU[a-off]}" "${CPU[a-on]}" "${CPU[b-off]}" "${CPU[b-on]}" "${RPS[a-off]}" "${RPS[a-on]}" "${RPS[b-off]}" "${RPS[b-on]}" <<'PY'
import sys, statistics as s
c=[list(map(float,x.split())) for x in sys.argv[1:5]]; r=[list(map(float,x.split())) for x in sys.argv[5:9]]
m=[s.median(x) for x in c]; q=[s.median(x) for x in r]
print(f"medians cpu a-off {m[0]} a-on {m[1]} b-off {m[2]} b-on {m[3]}; rps {q}")
print(f"logs cost A {m[1]-m[0]:+.2f} us, B {m[3]-m[2]:+.2f} us; paired per round A: {[round(b-a,2) for a,b in zip(c[0],c[1])]} B: {[round(b-a,2) for a,b in zip(c[2],c[3])]}")
PY
python3 - "${CPU[a-off]}" "${CPU[a-on]}" "${CPU[b-off]}" "${CPU[b-on]}" <<'PY'
import sys, statistics as s
c=[list(map(float,x.split())) for x in sys.argv[1:5]]
off=[b/a for a,b in zip(c[0],c[2])]; on=[b/a for a,b in zip(c[1],c[3])]
print("paired B/A CPU, logs off:", [round(x,3) for x in off], "median", round(s.median(off),3))
print("paired B/A CPU, logs on: ", [round(x,3) for x in on], "median", round(s.median(on),3))
PY
