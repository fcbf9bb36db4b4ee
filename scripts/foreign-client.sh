#!/usr/bin/env bash
# Drives a fresh `fengqiao dev` from outside, as a foreign client would: Python grpcio and
# grpc-requests (PyPI, pinned) through server reflection only (tests/foreign/reflection_client.py,
# then the README's worked examples: tests/foreign/referral_example.py (警调对接, a 110 referral
# from intake to closed) and tests/foreign/court_example.py (court diversion)), then the same
# 警调对接 example over JSON/HTTP only (tests/foreign/referral_example_http.py, standard library
# urllib) after validating /openapi.json with openapi-spec-validator (PyPI, pinned).
# Installs the client into a venv under ${FENGQIAO_TOOLS:-$HOME/.cache/fengqiao-tools}; builds
# and starts the suite on loopback in a temporary data directory; stops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR="${FENGQIAO_TOOLS:-$HOME/.cache/fengqiao-tools}"
VENV="$TOOLS_DIR/venv-foreign"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import grpc_requests" 2>/dev/null; then
  echo "==> installing grpcio==1.85.3 and grpc-requests==0.1.21 into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet grpcio==1.85.3 grpcio-reflection==1.85.1 grpc-requests==0.1.21
fi
if ! "$VENV/bin/python" -c "import openapi_spec_validator" 2>/dev/null; then
  echo "==> installing openapi-spec-validator==0.9.0 into $VENV"
  "$VENV/bin/pip" install --quiet openapi-spec-validator==0.9.0
fi

cargo build --locked -q -p fengqiao
bin=target/debug/fengqiao
dir=$(mktemp -d)
port=50061
"$bin" dev --data-dir "$dir/data" --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 \
  >"$dir/dev.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
  "$bin" healthcheck --addr "http://127.0.0.1:$port" --timeout-ms 500 >/dev/null 2>&1 && break
  sleep 0.2
done
dispatch=$("$bin" token --data-dir "$dir/data" --as xigang-110/dispatch-system)
officer=$("$bin" token --data-dir "$dir/data" --as xigang-bayilu-station/officer-01)
"$VENV/bin/python" tests/foreign/reflection_client.py "127.0.0.1:$port" "$dispatch" "$officer"
# The README's worked example of 警调对接: one 110 referral from intake to CLOSED.
FENGQIAO_BIN="$bin" "$VENV/bin/python" tests/foreign/referral_example.py "127.0.0.1:$port" "$dir/data"
# The README's worked example of 行政争议实质性化解 (administrative dispute).
FENGQIAO_BIN="$bin" "$VENV/bin/python" tests/foreign/admin_example.py "127.0.0.1:$port" "$dir/data"
# The README's worked example of 诉前调解 (court diversion), on the same suite.
"$VENV/bin/python" tests/foreign/court_example.py "127.0.0.1:$port" \
  "$("$bin" token --data-dir "$dir/data" --as xigang-court/clerk-01)" \
  "$("$bin" token --data-dir "$dir/data" --as xigang-court/judge-01)" \
  "$("$bin" token --data-dir "$dir/data" --as xigang-mediation-committee/director)"
# The 警调对接 example again, over JSON/HTTP only, after validating the OpenAPI document.
REQUIRE_OPENAPI_VALIDATOR=1 FENGQIAO_BIN="$bin" "$VENV/bin/python" \
  tests/foreign/referral_example_http.py "http://127.0.0.1:$port" "$dir/data"
