#!/usr/bin/env bash
# Encryption at rest, end to end (issue #14 §1, "Done when"): runs the README's 警调对接 worked
# example (tests/foreign/referral_example.py over gRPC, then referral_example_http.py over
# JSON/HTTP) against a fresh `fengqiao dev`, copies the data directory while the suite still
# runs (SQLite's -wal and -shm as they are mid-flight), stops it with SIGTERM, and searches
# every file of both copies and the captured log for the raw bytes of every ID number and
# phone the examples sent (tests/foreign/pii_raw_scan.py: it names what it finds by a label,
# never the value). Exit 0 only if none appears anywhere and the examples ran through.
#
#   scripts/pii-raw-scan.sh            (RUST_LOG=debug for a stricter log: default info)
#
# Uses the venv of scripts/foreign-client.sh (grpcio, grpc-requests, pinned).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR="${FENGQIAO_TOOLS:-$HOME/.cache/fengqiao-tools}"
VENV="$TOOLS_DIR/venv-foreign"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import grpc_requests" 2>/dev/null; then
  echo "==> installing grpcio==1.85.3 and grpc-requests==0.1.21 into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet grpcio==1.85.3 grpcio-reflection==1.85.1 grpc-requests==0.1.21
fi

cargo build --locked -q -p fengqiao
bin=target/debug/fengqiao
dir=$(mktemp -d)
port="${FENGQIAO_SCAN_PORT:-50071}"
RUST_LOG="${RUST_LOG:-info}" "$bin" dev --data-dir "$dir/data" --listen "127.0.0.1:$port" \
  --admin-listen 127.0.0.1:0 >"$dir/dev.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
  "$bin" healthcheck --addr "http://127.0.0.1:$port" --timeout-ms 500 >/dev/null 2>&1 && break
  sleep 0.2
done

examples=0
echo "==> the 警调对接 worked example over gRPC"
FENGQIAO_BIN="$bin" "$VENV/bin/python" tests/foreign/referral_example.py \
  "127.0.0.1:$port" "$dir/data" || { echo "FAIL referral_example.py"; examples=1; }
echo "==> the same example over JSON/HTTP"
FENGQIAO_BIN="$bin" "$VENV/bin/python" tests/foreign/referral_example_http.py \
  "http://127.0.0.1:$port" "$dir/data" || { echo "FAIL referral_example_http.py"; examples=1; }

# The files as a copy of a running server's disk would have them, then as the stopped one
# leaves them.
cp -a "$dir/data" "$dir/running-copy"
kill -TERM "$pid"
wait "$pid" || true
echo "==> raw-byte search: data directory (running copy, stopped) and the log"
scan=0
"$VENV/bin/python" tests/foreign/pii_raw_scan.py \
  --values-from tests/foreign/referral_example.py \
  --values-from tests/foreign/referral_example_http.py \
  "$dir/running-copy" "$dir/data" "$dir/dev.log" || scan=$?
if [[ $examples -ne 0 ]]; then
  echo "pii-raw-scan: the worked example did not run through (see above)"
  tail -20 "$dir/dev.log"
  exit 1
fi
exit "$scan"
