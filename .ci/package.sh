#!/usr/bin/env bash
# The Debian package, tested on every change: build it (from the binary the tests just built, so
# CI does not pay for a second, LTO build; releases use `cargo deb --strip`), install it with dpkg,
# check the installed binary and default config, serve a request through the installed binary as
# the `vallum` user with the generated secrets, and purge it again, leaving nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --quiet
rm -rf target/debian-ci
cargo deb --no-build --profile dev --strip -o target/debian-ci/ 2>&1 | grep -v "dev profile is not supported\|debug symbols set\|^\s*To enable" || true
deb=$(ls target/debian-ci/vallum_*.deb)
dpkg-deb -I "$deb" | grep -E "Depends|Installed-Size"

WORK=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; dpkg --purge vallum >/dev/null 2>&1 || true; }
trap cleanup EXIT

dpkg -i "$deb"
/usr/bin/vallum --version
/usr/bin/vallum check-config /etc/vallum/config.yaml
test "$(stat -c '%U:%G %a' /etc/vallum/secrets.env)" = "root:vallum 640"
test "$(stat -c '%U %a' /var/lib/vallum)" = "vallum 700"
grep -q '^COOKIE_SECRET=' /etc/vallum/secrets.env
! dpkg -c "$deb" | grep -q secrets.env   # generated, never shipped

# The default route sends welcome.localhost to 127.0.0.1:8000.
mkdir -p "$WORK/www" && echo "hello from the upstream" >"$WORK/www/index.html"
python3 -m http.server 8000 --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 & PIDS+=($!)
set -a; . /etc/vallum/secrets.env; set +a
runuser -u vallum -- env COOKIE_SECRET="$COOKIE_SECRET" SHARED_SECRET="$SHARED_SECRET" \
  /usr/bin/vallum run -c /etc/vallum/config.yaml >"$WORK/vallum.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do
  body=$(curl -sf -H "Host: welcome.localhost" http://127.0.0.1:8080/ 2>/dev/null) && break
  sleep 0.1
done
[ "${body:-}" = "hello from the upstream" ] || { echo "installed vallum did not serve the route"; cat "$WORK/vallum.log"; exit 1; }
kill "${PIDS[1]}"; wait "${PIDS[1]}" 2>/dev/null || true

dpkg --purge vallum
for gone in /usr/bin/vallum /etc/vallum /var/lib/vallum /lib/systemd/system/vallum.service; do
  [ ! -e "$gone" ] || { echo "left behind after purge: $gone"; exit 1; }
done
echo "package: built, installed, served a request, purged"
