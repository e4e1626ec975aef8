# Shared by the scripts in load/ (`source load/lib.sh` from the repository root, after
# `set -euo pipefail`): a scratch directory and the processes to stop on exit, free ports, waiting
# for a listener, the 100-byte upstream every target fronts, and the gateway config the signed-in
# runs share.

WORK=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A free port whose next port is free too: `vallum demo --port P` serves its identity provider on
# P+1, which a port picked alone may find taken.
free_port_pair() {
  python3 -c '
import socket
while True:
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1))
    except OSError:
        continue
    print(p)
    break'
}

# wait_http URL [HOST]: until URL answers 2xx/3xx (WAIT_TRIES × 0.1 s, default 100); on failure
# the tails of the logs under $WORK say why.
wait_http() {
  for _ in $(seq "${WAIT_TRIES:-100}"); do
    curl -sf -o /dev/null -H "Host: ${2:-x}" "$1" && return 0
    sleep 0.1
  done
  echo "no answer from $1"
  tail -n 5 "$WORK"/*.log 2>/dev/null || true
  exit 1
}

# start_upstream PORT [PREFIX...]: nginx answering 100 bytes on 127.0.0.1:PORT with
# UPSTREAM_WORKERS workers (default 1), started under PREFIX (e.g. `taskset -c 1`).
start_upstream() {
  local port=$1; shift
  local body
  body=$(printf 'x%.0s' $(seq 100))
  # UPSTREAM_H2C_PORT: the same answer over HTTP/2 with prior knowledge, for h2c:// upstreams.
  local h2c=""
  [ -z "${UPSTREAM_H2C_PORT:-}" ] || h2c="server { listen 127.0.0.1:$UPSTREAM_H2C_PORT http2; location / { return 200 \"$body\"; } }"
  mkdir -p "$WORK/nginx"
  cat >"$WORK/upstream.conf" <<NGINX
worker_processes ${UPSTREAM_WORKERS:-1};
pid $WORK/upstream.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  # An identity assertion naming 1,000 groups is about 12 KB.
  large_client_header_buffers 4 64k;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx; fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:$port; location / { return 200 "$body"; } }
  $h2c
}
NGINX
  "$@" nginx -c "$WORK/upstream.conf" -g 'daemon off;' & PIDS+=($!)
  wait_http "http://127.0.0.1:$port/"
}

# demo_signin_yaml ADDRESS PORT: the head of a gateway config listening on ADDRESS that signs in
# against `vallum demo --port PORT`'s identity provider (PORT+1), at `log_level: warn`.
demo_signin_yaml() {
  cat <<YAML
address: $1
insecure_server: true
log_level: warn
health_check_addr: ''
authenticate_service_url: http://authenticate.localhost:$2
idp_provider: oidc
idp_provider_url: http://127.0.0.1:$(($2 + 1))
idp_client_id: vallum-demo
idp_client_secret: vallum-demo-secret
cookie_secret: 8GIP1sU0aqXJZ8T8XkL1zB0cR2P0kTmYxw0a3DkBwsw=
shared_secret: Wm9vaF9zaGFyZWRfc2VjcmV0XzMyX2J5dGVzX19fXyE=
YAML
}

# The signed-in route's policy in every comparison: five criteria, all true for the demo's alice.
AUTH_POLICY='    policy:
      allow:
        and:
          - authenticated_user: true
          - email: {ends_with: "@demo.vallum.dev"}
          - groups: {has: engineering}
          - http_method: GET
          - source_ip: 127.0.0.0/8'

# bench_routes PORT UPSTREAM_PORT: the two routes of the profiling and training runs — a public route
# (public.localhost) and the signed-in route (app.localhost) with the policy above and identity headers.
bench_routes() {
  cat <<YAML
routes:
  - from: http://public.localhost:$1
    to: http://127.0.0.1:$2
    allow_public_unauthenticated_access: true
  - from: http://app.localhost:$1
    to: http://127.0.0.1:$2
    pass_identity_headers: true
$AUTH_POLICY
YAML
}

# start_postgres PORT: a private PostgreSQL on 127.0.0.1:PORT with its data under $WORK (as the
# `postgres` user when run as root, since PostgreSQL refuses root).
start_postgres() {
  local port=$1 bin as=()
  bin=$(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)")")
  [ -x "$bin/postgres" ] || { echo "PostgreSQL server binaries are needed (apt-get install postgresql)"; exit 1; }
  mkdir -p "$WORK/pg"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$WORK/pg"; chmod 755 "$WORK"; as=(runuser -u postgres --); fi
  "${as[@]}" "$bin/initdb" -U postgres -A trust -N --no-instructions -D "$WORK/pg/data" >"$WORK/pg-init.log" 2>&1
  "${as[@]}" "$bin/postgres" -D "$WORK/pg/data" -p "$port" -k "$WORK/pg/data" -c listen_addresses=127.0.0.1 \
    -c fsync=off >"$WORK/postgres.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 100); do "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && return 0; sleep 0.1; done
  echo "PostgreSQL did not start"; tail -n 5 "$WORK/postgres.log"; exit 1
}
