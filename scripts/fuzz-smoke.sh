#!/usr/bin/env bash
# Fuzz smoke: build the cargo-fuzz targets under fuzz/ and run each for a few seconds, seeded
# from the committed fixtures. Not a replacement for long fuzzing runs; a quick "still no panic".
#
#   scripts/fuzz-smoke.sh            # every target, 10 s each
#   SECONDS_PER_TARGET=5 scripts/fuzz-smoke.sh cert_rdata smtp_session
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Only the stable toolchain is assumed:
# RUSTC_BOOTSTRAP=1 lets it accept the -Z flags cargo-fuzz passes. `-s none` builds without
# AddressSanitizer (the crate forbids unsafe code; OpenSSL is not instrumented either way), which
# halves the build. A crash leaves its input in fuzz/artifacts/<target>/; save it under
# tests/fixtures/fuzz/<target>/ with the fix (docs/testing.md, "Fuzzing").
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
per_target="${SECONDS_PER_TARGET:-10}"
all=(open_message mime_entity mdn_report hl7_message cert_rdata smtp_session)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi

seeds() {
  case "$1" in
    open_message) echo tests/fixtures/open ;;
    mime_entity) echo fuzz/seeds/mime_entity tests/fixtures/open ;;
    mdn_report) echo fuzz/seeds/mdn_report ;;
    hl7_message) echo config/samples ;;
    cert_rdata) echo fuzz/seeds/cert_rdata ;;
    smtp_session) echo fuzz/seeds/smtp_session ;;
  esac
  # Crashers already fixed stay in the corpus.
  [ -d "tests/fixtures/fuzz/$1" ] && echo "tests/fixtures/fuzz/$1"
  true
}

start=$(date +%s)
cargo fuzz build -s none
built=$(date +%s)
echo "fuzz build: $((built - start)) s"
failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "== $t (${per_target} s)"
  # shellcheck disable=SC2046
  if ! cargo fuzz run -s none "$t" "fuzz/corpus/$t" $(seeds "$t") -- \
      -max_total_time="$per_target" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
      2>"fuzz/corpus/$t.log"; then
    failed+=("$t")
    tail -n 40 "fuzz/corpus/$t.log"
  fi
  grep -E '^stat::number_of_executed_units|^Done' "fuzz/corpus/$t.log" || true
done
echo "fuzz smoke: $(( $(date +%s) - start )) s in all"
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashed: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
