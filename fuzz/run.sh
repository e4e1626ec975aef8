#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 20) each, on stable Rust (RUSTC_BOOTSTRAP=1
# unlocks the sanitizer flags cargo-fuzz passes). New inputs go to a scratch corpus, so the seed
# corpus in fuzz/corpus/ stays as committed; a crash leaves its input in fuzz/artifacts/ and fails
# the run (turn it into a regression test, then fix).
#
#   fuzz/run.sh                  # all targets;  fuzz/run.sh path   # one
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
SECONDS_EACH=${FUZZ_SECONDS:-20}
TARGETS=${*:-config ppl cookie redirect path jsonrpc mcp_register}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cargo fuzz build -O
for t in $TARGETS; do
  mkdir -p "$scratch/$t"
  echo "fuzzing $t for ${SECONDS_EACH}s"
  cargo fuzz run -O "$t" "$scratch/$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 2>&1 | tail -3
done
