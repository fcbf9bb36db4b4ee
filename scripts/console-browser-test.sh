#!/usr/bin/env bash
# The web console in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
# installed by scripts/install-deps.sh) driven by Selenium (PyPI, pinned): a fresh
# `fengqiao dev` on free ports, the 警调对接 worked example (tests/foreign/referral_example.py)
# for data and tests/foreign/console_incident.py for one open delivery incident, then
# tests/foreign/console_browser.py logs in with dev tokens, opens the dashboard, a case page,
# the incidents (retrying the one) and the audit page, and checks what they show against the
# JSON API. Screenshots go to ci-artifacts/console/ (gitignored).
# The venv is the one scripts/foreign-client.sh uses (${FENGQIAO_TOOLS:-$HOME/.cache/fengqiao-tools}).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR="${FENGQIAO_TOOLS:-$HOME/.cache/fengqiao-tools}"
VENV="$TOOLS_DIR/venv-foreign"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import grpc_requests" 2>/dev/null; then
  echo "==> installing grpcio==1.85.3 and grpc-requests==0.1.21 into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet grpcio==1.85.3 grpcio-reflection==1.85.1 grpc-requests==0.1.21
fi
if ! "$VENV/bin/python" -c "import selenium; assert selenium.__version__ == '4.51.0'" 2>/dev/null; then
  echo "==> installing selenium==4.51.0 into $VENV (4.52.0 needs a certifi newer than PyPI has)"
  "$VENV/bin/pip" install --quiet selenium==4.51.0
fi
for b in chromium chromedriver; do
  command -v "$b" >/dev/null 2>&1 || { echo "$b not found: run scripts/install-deps.sh" >&2; exit 1; }
done

cargo build --locked -q -p fengqiao
bin=target/debug/fengqiao
dir=$(mktemp -d)
out=ci-artifacts/console
mkdir -p "$out"
rm -f "$out"/*.png
# Port 0: the suite binds free ports and prints the one it got.
"$bin" dev --data-dir "$dir/data" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  >"$dir/dev.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
addr=""
for _ in $(seq 1 300); do
  addr=$(sed -n 's/^  gRPC *\([0-9.]*:[0-9]*\).*/\1/p' "$dir/dev.log" | head -n1)
  [[ -n "$addr" ]] && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/dev.log" >&2; exit 1; }
  sleep 0.2
done
[[ -n "$addr" ]] || { echo "fengqiao dev printed no address" >&2; cat "$dir/dev.log" >&2; exit 1; }
for _ in $(seq 1 100); do
  "$bin" healthcheck --addr "http://$addr" --timeout-ms 500 >/dev/null 2>&1 && break
  sleep 0.2
done
echo "==> suite on $addr; the 警调对接 worked example for data"
FENGQIAO_BIN="$bin" "$VENV/bin/python" tests/foreign/referral_example.py "$addr" "$dir/data" >"$dir/example.log" \
  || { cat "$dir/example.log" >&2; exit 1; }
echo "==> a delivery incident for the console to retry"
FENGQIAO_BIN="$bin" "$VENV/bin/python" tests/foreign/console_incident.py "$addr" "$dir/data" >"$dir/incident.log" \
  || { cat "$dir/incident.log" >&2; exit 1; }
incident=$(tail -n1 "$dir/incident.log")
echo "==> the console in headless Chromium"
"$VENV/bin/python" tests/foreign/console_browser.py "http://$addr" \
  "$("$bin" token --data-dir "$dir/data" --as xigang-bayilu-station/officer-01)" \
  "$("$bin" token --data-dir "$dir/data" --as xigang-justice-bureau/admin)" \
  "$out" "$incident"
