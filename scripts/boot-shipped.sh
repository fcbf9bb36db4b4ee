#!/usr/bin/env bash
# Boots every shipped deployment config (deploy/compose.yaml, each k8s overlay rendered by
# `kubectl kustomize`) as separate `fengqiao serve` processes on loopback with a throwaway
# PostgreSQL cluster, and makes one authenticated call through each service
# (tests/deploy/boot_shipped.py says exactly what it substitutes and why).
#
#   scripts/boot-shipped.sh [compose|k8s-dev|k8s-prod|k8s-zones ...]     (default: all four)
#
# Needs kubectl, openssl, the PostgreSQL server binaries (scripts/install-deps.sh) and
# Python 3.11; installs grpcio and PyYAML (pinned) into a venv under
# ${FENGQIAO_TOOLS:-$HOME/.cache/fengqiao-tools}.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR="${FENGQIAO_TOOLS:-$HOME/.cache/fengqiao-tools}"
VENV="$TOOLS_DIR/venv-boot"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import grpc, yaml" 2>/dev/null; then
  echo "==> installing grpcio==1.85.3 and PyYAML==6.0.3 into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check grpcio==1.85.3 PyYAML==6.0.3
fi
command -v kubectl >/dev/null || { echo "kubectl not found on PATH" >&2; exit 1; }
command -v openssl >/dev/null || { echo "openssl not found on PATH" >&2; exit 1; }

cargo build --locked -q -p fengqiao
exec "$VENV/bin/python" tests/deploy/boot_shipped.py target/debug/fengqiao . "$@"
