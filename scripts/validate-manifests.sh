#!/usr/bin/env bash
# Validate Fengqiao's deployment assets offline.
#
#   scripts/validate-manifests.sh
#
# 1. Renders every kustomization (k8s/base and each k8s/overlays/*) with
#    `kubectl kustomize` and validates each rendered resource against the
#    Kubernetes OpenAPI schemas of ${FENGQIAO_K8S_VERSION} (default 1.32.0) with
#    kubernetes-validate in --strict mode (unknown fields are errors). Schemas are
#    bundled in the package: validation needs no network and no cluster.
#    Resources without a bundled schema (CRDs) count as failures.
# 2. Validates the example Secrets (not part of any kustomization) the same way.
# 3. Parses deploy/compose.yaml and deploy/otel-collector.yaml (PyYAML) and checks
#    their cross-references; parses every TOML config (tomllib) and checks its keys
#    against the configuration keys `fengqiao` understands; parses JSON key sets.
# 4. Checks that every service reads its personal-information key (`[pii] key_file`) from
#    a mount: a read-only Secret in every rendered Deployment, a volume in compose.
# 5. Checks that the binary's service registry (`fengqiao services`) and the kustomize
#    components (k8s/components/<service>/, listed in k8s/base) name the same services.
#
# Tools: kubectl (>= 1.27, for `kubectl kustomize` with kustomize v5) on PATH;
# python3 (>= 3.11). kubernetes-validate is installed once (network needed only
# then) into a venv under ${FENGQIAO_TOOLS:-$HOME/.cache/fengqiao-tools}/venv.
# kubernetes-validate X.Y only bundles schemas up to Kubernetes X.Y, so its
# version is pinned to match (FENGQIAO_KUBERNETES_VALIDATE_VERSION).
set -euo pipefail

K8S_VERSION="${FENGQIAO_K8S_VERSION:-1.32.0}"
KV_VERSION="${FENGQIAO_KUBERNETES_VALIDATE_VERSION:-1.32.0}"
TOOLS_DIR="${FENGQIAO_TOOLS:-$HOME/.cache/fengqiao-tools}"
VENV="$TOOLS_DIR/venv"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '==> %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
command -v kubectl >/dev/null 2>&1 \
  || die "kubectl not found on PATH. Install kubectl >= 1.27 (it provides 'kubectl kustomize'): https://kubernetes.io/docs/tasks/tools/"
command -v python3 >/dev/null 2>&1 \
  || die "python3 not found on PATH (needed for kubernetes-validate and the config checks)."
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "python3 >= 3.11 required (tomllib); found $(python3 --version 2>&1)."

if [[ ! -x "$VENV/bin/kubernetes-validate" ]] \
   || [[ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null)" != "$KV_VERSION" ]]; then
  log "installing kubernetes-validate==$KV_VERSION into $VENV"
  mkdir -p "$TOOLS_DIR"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION" \
    || die "could not install kubernetes-validate==$KV_VERSION (network needed on first run)."
fi
KV="$VENV/bin/kubernetes-validate"
PY="$VENV/bin/python"
log "kubectl $(kubectl version --client 2>/dev/null | head -n1 | sed 's/^Client Version: //'); kubernetes-validate $("$KV" --version) against Kubernetes $K8S_VERSION"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

failures=0

# validate_file FILE LABEL: strict schema validation; any ERROR/WARN/FATAL fails.
validate_file() {
  local file="$1" label="$2" out rc=0
  out="$("$KV" --strict --kubernetes-version "$K8S_VERSION" "$file" 2>&1)" || rc=$?
  local n_ok
  n_ok="$(grep -c '^INFO ' <<<"$out" || true)"
  if [[ $rc -ne 0 ]] || grep -qE '^(ERROR|WARN|FATAL)' <<<"$out"; then
    grep -vE '^INFO ' <<<"$out" | sed "s|$file|$label|g" >&2
    printf '    FAIL %s (%s resources passed)\n' "$label" "$n_ok"
    failures=$((failures + 1))
  else
    printf '    ok   %s: %s resources valid\n' "$label" "$n_ok"
  fi
}

# ---------------------------------------------------------------- kustomize
log "kustomize build + schema validation (Kubernetes $K8S_VERSION, strict)"
shopt -s nullglob
kustomizations=(k8s/base)
for d in k8s/overlays/*/; do
  [[ -f "$d/kustomization.yaml" ]] && kustomizations+=("${d%/}")
done
[[ ${#kustomizations[@]} -gt 1 ]] || die "no overlays found under k8s/overlays/"

for k in "${kustomizations[@]}"; do
  out="$WORK/$(tr '/' '_' <<<"$k").yaml"
  if ! kubectl kustomize "$k" >"$out" 2>"$WORK/err"; then
    cat "$WORK/err" >&2
    printf '    FAIL %s: kubectl kustomize failed\n' "$k"
    failures=$((failures + 1))
    continue
  fi
  # Secrets are never committed: a rendered Secret means one slipped in.
  if grep -qE '^kind: Secret$' "$out"; then
    printf '    FAIL %s: renders a Secret; secrets must not be in a kustomization\n' "$k"
    failures=$((failures + 1))
  fi
  validate_file "$out" "$k"
done

log "example Secrets (outside the kustomizations)"
for f in k8s/base/secrets.example.yaml k8s/overlays/*/*.example.yaml; do
  validate_file "$f" "$f"
done

# ---------------------------------------------------------------- network policy reachability
# Evaluates the rendered NetworkPolicies (default deny) as a CNI would, for every pair of
# Fengqiao pods and the outside peers they need, and checks the intended graph: every service
# reaches DNS, PostgreSQL and the collector and is scraped from `monitoring`; on gRPC exactly
# the pairs of the overlay's intended-graph.yaml connect (k8s/overlays/zones: police and court
# services call the router and are not called, the router and the gov zone both ways, nothing
# zone-to-zone), or without one the router and each agency service both ways; no agency
# service reaches another one directly (every hand-over goes through the router).
log "network policies: who can reach whom (rendered, default deny)"
if "$PY" -c 'import yaml' 2>/dev/null; then
  for k in "${kustomizations[@]}"; do
    rendered="$WORK/$(tr '/' '_' <<<"$k").yaml"
    [[ -f "$rendered" ]] || continue
    if ! "$PY" - "$rendered" "$k" <<'PYEOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
label = sys.argv[2]
ns_labels = {d["metadata"]["name"]: dict(d["metadata"].get("labels") or {}, **{
    "kubernetes.io/metadata.name": d["metadata"]["name"]}) for d in docs if d["kind"] == "Namespace"}
pols = [d for d in docs if d["kind"] == "NetworkPolicy"]
pods = {}
for d in docs:
    if d["kind"] == "Deployment":
        ns = d["metadata"].get("namespace", "default")
        pods[d["metadata"]["name"]] = (ns, d["spec"]["template"]["metadata"].get("labels", {}))

def matches(sel, labels):
    if sel is None:
        return False
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        has, val = e["key"] in labels, labels.get(e["key"])
        op = e["operator"]
        if op == "In" and val not in e["values"]: return False
        if op == "NotIn" and has and val in e["values"]: return False
        if op == "Exists" and not has: return False
        if op == "DoesNotExist" and has: return False
    return True

def peer_ok(peer, own_ns, target):
    # target: ("pod", ns, labels) or ("ns", ns_labels) for "any pod in a namespace"
    # or ("ip",) for an address outside the cluster.
    if "ipBlock" in peer:
        return target[0] == "ip"
    if target[0] == "ip":
        return False
    if "namespaceSelector" in peer:
        tns_labels = target[2] if target[0] == "ns" else ns_labels.get(target[1], {"kubernetes.io/metadata.name": target[1]})
        if not matches(peer["namespaceSelector"], tns_labels) and peer["namespaceSelector"] != {}:
            return False
    elif target[0] != "pod" or target[1] != own_ns:
        return False
    if "podSelector" in peer:
        return peer["podSelector"] == {} or \
            (target[0] == "pod" and matches(peer["podSelector"], target[2]))
    return True

def port_ok(rule, port, proto):
    ports = rule.get("ports")
    return not ports or any(p.get("port") == port and p.get("protocol", "TCP") == proto for p in ports)

def allowed(direction, pod, target, port, proto="TCP"):
    ns, labels = pod
    key = "egress" if direction == "Egress" else "ingress"
    side = "to" if key == "egress" else "from"
    selecting = [p for p in pols if p["metadata"].get("namespace", "default") == ns
                 and direction in p["spec"].get("policyTypes", ["Ingress"])
                 and (p["spec"]["podSelector"] == {} or matches(p["spec"]["podSelector"], labels))]
    if not selecting:
        return True  # not isolated
    for p in selecting:
        for rule in p["spec"].get(key) or []:
            peers = rule.get(side)
            if (not peers or any(peer_ok(x, ns, target) for x in peers)) and port_ok(rule, port, proto):
                return True
    return False

def connects(a, b, port):
    pa, pb = pods[a], pods[b]
    return allowed("Egress", pa, ("pod",) + pb, port) and allowed("Ingress", pb, ("pod",) + pa, port)

errors = []
ext = lambda name: ("ns", name, {"kubernetes.io/metadata.name": name})
for name, pod in sorted(pods.items()):
    if not allowed("Egress", pod, ext("kube-system"), 53, "UDP"):
        errors.append(f"{name}: no DNS (kube-system UDP 53)")
    if not allowed("Egress", pod, ("ip",), 5432) and not allowed("Egress", pod, ext("postgres"), 5432):
        errors.append(f"{name}: cannot reach PostgreSQL (TCP 5432)")
    if not allowed("Egress", pod, ext("observability"), 4317):
        errors.append(f"{name}: cannot reach the OTLP collector (observability TCP 4317)")
    if not allowed("Ingress", pod, ext("monitoring"), 9090):
        errors.append(f"{name}: metrics not scrapable from monitoring (TCP 9090)")
# The intended gRPC graph: the overlay's intended-graph.yaml (caller: [callees]) when it has
# one, else the router <-> every agency service. Every other pair must be unreachable.
import os
graph_file = os.path.join(label, "intended-graph.yaml")
if os.path.isfile(graph_file):
    intended = {(a, b) for a, bs in (yaml.safe_load(open(graph_file)) or {}).items() for b in bs}
    for a, b in sorted(intended):
        for n in (a, b):
            if n not in pods:
                errors.append(f"{graph_file} names {n}, which this overlay does not deploy")
    graph_text = ", ".join(f"{a}->{b}" for a, b in sorted(intended))
else:
    agencies = [n for n in pods if n != "router"]
    intended = {(a, "router") for a in agencies} | {("router", a) for a in agencies}
    graph_text = "router <-> each agency service"
for a in sorted(pods):
    for b in sorted(pods):
        if a == b:
            continue
        can = connects(a, b, 50051)
        if (a, b) in intended and not can:
            errors.append(f"{a} cannot call {b} (TCP 50051), which the intended graph needs")
        elif (a, b) not in intended and can:
            via = "hand-overs must go through the router" if "router" not in (a, b) \
                else "not in the intended graph"
            errors.append(f"{a} reaches {b} (TCP 50051): {via}")
for e in errors:
    print(f"    FAIL {label}: {e}")
if not errors:
    print(f"    ok   {label}: {len(pods)} services, {len(pols)} policies: exactly {graph_text}; "
          f"DNS/PostgreSQL/OTLP/metrics for all")
sys.exit(1 if errors else 0)
PYEOF
    then
      failures=$((failures + 1))
    fi
  done
fi

# ---------------------------------------------------------------- personal-information key mounts
# `serve` does not start without its personal-information key: in every rendered Deployment the
# config's `[pii] key_file` must lie in a volume mounted from a Secret (never a ConfigMap:
# the key is secret), read-only.
log "personal-information key: [pii] key_file mounted from a Secret in every Deployment"
if "$PY" -c 'import yaml' 2>/dev/null; then
  for k in "${kustomizations[@]}"; do
    rendered="$WORK/$(tr '/' '_' <<<"$k").yaml"
    [[ -f "$rendered" ]] || continue
    if ! "$PY" - "$rendered" "$k" <<'PYEOF'
import os, sys, tomllib, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
label = sys.argv[2]
cms = {(d["metadata"].get("namespace"), d["metadata"]["name"]): d.get("data") or {}
       for d in docs if d["kind"] == "ConfigMap"}
errors, n = [], 0
for d in docs:
    if d["kind"] != "Deployment":
        continue
    n += 1
    name, ns = d["metadata"]["name"], d["metadata"].get("namespace")
    pod = d["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    c = pod["containers"][0]
    cfg_path = c["args"][c["args"].index("--config") + 1]
    cfg = None
    for m in c.get("volumeMounts", []):
        v = vols.get(m["name"], {})
        if "configMap" in v and cfg_path.startswith(m["mountPath"].rstrip("/") + "/"):
            cfg = cms.get((ns, v["configMap"]["name"]), {}).get(os.path.basename(cfg_path))
    if cfg is None:
        errors.append(f"{name}: config {cfg_path} not found in a mounted ConfigMap")
        continue
    key_file = tomllib.loads(cfg).get("pii", {}).get("key_file")
    if not key_file:
        errors.append(f"{name}: no [pii] key_file in its config (serve would not start)")
        continue
    mounts = [m for m in c.get("volumeMounts", [])
              if key_file.startswith(m["mountPath"].rstrip("/") + "/")]
    if not mounts:
        errors.append(f"{name}: [pii] key_file {key_file} is not under any volume mount")
    elif not all("secret" in vols.get(m["name"], {}) and m.get("readOnly") for m in mounts):
        errors.append(f"{name}: [pii] key_file {key_file} must come from a read-only Secret mount")
for e in errors:
    print(f"    FAIL {label}: {e}")
if not errors:
    print(f"    ok   {label}: {n} Deployments read [pii] key_file from a Secret")
sys.exit(1 if errors else 0)
PYEOF
    then
      failures=$((failures + 1))
    fi
  done
fi

# ---------------------------------------------------------------- compose, collector, configs
log "deploy/: compose.yaml, otel-collector.yaml, TOML configs, JSON key sets"
if "$PY" -c 'import yaml' 2>/dev/null; then
  if ! "$PY" - "$ROOT" <<'PYEOF'
import json, os, sys, tomllib
import yaml

root = sys.argv[1]
errors = []
def err(msg): errors.append(msg)

# --- compose
path = os.path.join(root, "deploy/compose.yaml")
with open(path) as f:
    compose = yaml.safe_load(f)
services = compose.get("services") or {}
for need in ("postgres", "otel-collector", "router", "police-referral", "mediation"):
    if need not in services:
        err(f"compose: service {need!r} missing")
named_volumes = set((compose.get("volumes") or {}).keys())
for name, svc in services.items():
    if not (svc.get("image") or svc.get("build")):
        err(f"compose: {name}: neither image nor build")
    dep = svc.get("depends_on") or {}
    for d in (dep if isinstance(dep, list) else dep.keys()):
        if d not in services:
            err(f"compose: {name}: depends_on unknown service {d!r}")
        elif isinstance(dep, dict) and dep[d].get("condition") == "service_healthy" \
                and "healthcheck" not in services[d]:
            err(f"compose: {name}: waits for {d} healthy but {d} has no healthcheck")
    for v in svc.get("volumes") or []:
        src = (v.get("source") if isinstance(v, dict) else v.split(":", 1)[0])
        if src.startswith((".", "/")):
            if not os.path.exists(os.path.normpath(os.path.join(root, "deploy", src))):
                err(f"compose: {name}: bind-mount source {src} does not exist")
        elif src not in named_volumes:
            err(f"compose: {name}: named volume {src!r} not declared")
    build = svc.get("build")
    if isinstance(build, dict):
        ctx = os.path.normpath(os.path.join(root, "deploy", build.get("context", ".")))
        if not os.path.isfile(os.path.join(ctx, build.get("dockerfile", "Dockerfile"))):
            err(f"compose: {name}: Dockerfile not found")
# Every `serve` service reads [pii] key_file from a mount (serve does not start without it).
for name, svc in services.items():
    cmd = svc.get("command") or []
    if not cmd or cmd[0] != "serve" or "--config" not in cmd:
        continue
    cfg_dst = cmd[cmd.index("--config") + 1]
    vols = [(v.split(":")[0], v.split(":")[1]) for v in svc.get("volumes") or []
            if isinstance(v, str)]
    srcs = [s for s, d in vols if d == cfg_dst]
    if not srcs:
        err(f"compose: {name}: config {cfg_dst} not mounted")
        continue
    cfg_host = os.path.normpath(os.path.join(root, "deploy", srcs[0]))
    if not os.path.isfile(cfg_host):
        continue  # reported above
    with open(cfg_host, "rb") as f:
        key_file = tomllib.load(f).get("pii", {}).get("key_file")
    if not key_file:
        err(f"compose: {name}: no [pii] key_file in {srcs[0]} (serve would not start)")
    elif not any(key_file == d or key_file.startswith(d.rstrip("/") + "/") for _, d in vols):
        err(f"compose: {name}: [pii] key_file {key_file} is not under any of its mounts")
print(f"    ok   deploy/compose.yaml parses ({len(services)} services)" if not errors else "", end="\n" if not errors else "")

# --- collector
n = len(errors)
with open(os.path.join(root, "deploy/otel-collector.yaml")) as f:
    col = yaml.safe_load(f)
for kind in ("receivers", "processors", "exporters"):
    defined = set((col.get(kind) or {}).keys())
    for pname, p in (col["service"]["pipelines"] or {}).items():
        for c in p.get(kind, []):
            if c not in defined:
                err(f"otel-collector: pipeline {pname}: {kind[:-1]} {c!r} not defined")
for e in col["service"].get("extensions", []):
    if e not in (col.get("extensions") or {}):
        err(f"otel-collector: extension {e!r} not defined")
if len(errors) == n:
    print("    ok   deploy/otel-collector.yaml parses, pipelines consistent")

# --- TOML configs. Which keys exist is checked by fengqiao's own parser (below, in bash:
# `--dump-config` on every config, deny_unknown_fields); here only the deployment rules.
ROUTER_DATA = {"agencies_file", "routes_dir", "holidays_file"}
# Service configs: deploy/config/*.toml, k8s/**/fengqiao.toml,
# k8s/overlays/*/config/*.toml, k8s/overlays/zones/<zone>/<service>.toml. Other TOML files (router data: agency seed,
# holiday calendar, routes) are only parsed here; the boot test starts the router on them.
import glob
cfgs = set(glob.glob(os.path.join(root, "deploy/config/*.toml")))
cfgs |= set(glob.glob(os.path.join(root, "k8s/**/fengqiao.toml"), recursive=True))
cfgs |= set(glob.glob(os.path.join(root, "k8s/overlays/*/config/*.toml")))
# The zones overlay: one kustomization per zone, each service's config next to it.
cfgs |= set(glob.glob(os.path.join(root, "k8s/overlays/zones/*/*.toml")))
data = set(glob.glob(os.path.join(root, "deploy/**/*.toml"), recursive=True)) \
     | set(glob.glob(os.path.join(root, "k8s/**/*.toml"), recursive=True))
for p in sorted(data - cfgs):
    try:
        with open(p, "rb") as f:
            tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        err(f"{os.path.relpath(p, root)}: {e}")
# The shipped holiday calendars are copies of the official one (kustomize cannot load files
# outside its directory): a stale copy would count working days wrongly.
with open(os.path.join(root, "deploy/dev/holidays.toml"), "rb") as f:
    official = f.read()
for rel in ("k8s/components/router/data/holidays.toml", "deploy/config/router/holidays.toml"):
    with open(os.path.join(root, rel), "rb") as f:
        if f.read() != official:
            err(f"{rel}: differs from deploy/dev/holidays.toml (copy it again)")
for p in sorted(cfgs):
    rel = os.path.relpath(p, root)
    try:
        with open(p, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        err(f"{rel}: {e}")
        continue
    if "log_format" in doc and doc["log_format"] not in ("json", "text"):
        err(f"{rel}: log_format must be json or text")
    name = os.path.basename(os.path.dirname(p)) if os.path.basename(p) == "fengqiao.toml" \
        else os.path.basename(p)[:-5]
    if name not in ("router", "dev"):
        if not doc.get("peers", {}).get("router"):
            err(f"{rel}: agency service without [peers] router")
        if ROUTER_DATA & doc.keys():
            err(f"{rel}: router-only keys in an agency service config")
    if name != "dev" and not doc.get("pii", {}).get("key_file"):
        err(f"{rel}: no [pii] key_file (serve does not start without a personal-information key)")
    lim = doc.get("limits", {})
    if lim.get("shutdown_grace_ms", 25000) >= 30000:
        err(f"{rel}: shutdown_grace_ms must stay below terminationGracePeriodSeconds (30 s)")
    tls = doc.get("tls", {})
    if bool(tls.get("cert_file")) != bool(tls.get("key_file")):
        err(f"{rel}: [tls] cert_file and key_file go together")
    if tls.get("cert_file") and doc.get("peers", {}).get("router", "https").startswith("http:"):
        err(f"{rel}: TLS on but [peers] router is plain http")
print(f"    ok   {len(cfgs)} TOML configs parse, deployment rules hold" if not errors else "", end="\n" if not errors else "")

# --- JSON key sets
keysets = [os.path.join(root, "deploy/config/public_keys.json")]
for dirpath, _, files in os.walk(os.path.join(root, "k8s")):
    keysets += [os.path.join(dirpath, fn) for fn in files if fn == "public_keys.json"]
for p in keysets:
    rel = os.path.relpath(p, root)
    with open(p) as f:
        try:
            ks = json.load(f)
        except json.JSONDecodeError as e:
            err(f"{rel}: {e}")
            continue
    if not isinstance(ks.get("keys"), list):
        err(f"{rel}: expected {{\"keys\": [...]}}")
        continue
    for i, key in enumerate(ks["keys"]):
        if set(key) != {"kid", "alg", "public_key_b64"} or key.get("alg") != "EdDSA":
            err(f"{rel}: keys[{i}] must have exactly kid, alg=EdDSA, public_key_b64")
if not errors:
    print(f"    ok   {len(keysets)} public key sets parse")

for e in errors:
    print(f"    FAIL {e}")
sys.exit(1 if errors else 0)
PYEOF
  then
    failures=$((failures + 1))
  fi
else
  log "PyYAML not available in $VENV; skipping compose/collector/config checks"
fi

# ---------------------------------------------------------------- configs, by fengqiao itself
# Every shipped config through the binary's own loader (unknown keys and bad values refused,
# as at start-up), as the service it is for.
log "configs through fengqiao's own parser (--dump-config)"
cargo build --locked -q -p fengqiao
FQ="$ROOT/target/debug/fengqiao"
check_config() { # FILE SERVICE
  local out
  if [[ "$2" == dev ]]; then
    out=$("$FQ" dev --config "$1" --dump-config 2>&1 >/dev/null) || { printf '    FAIL %s: %s\n' "$1" "$out"; failures=$((failures + 1)); return; }
  else
    out=$("$FQ" serve --service "$2" --config "$1" --dump-config 2>&1 >/dev/null) || { printf '    FAIL %s: %s\n' "$1" "$out"; failures=$((failures + 1)); return; }
  fi
  printf '    ok   %s (%s)\n' "$1" "$2"
}
for f in deploy/config/*.toml k8s/overlays/*/config/*.toml k8s/overlays/zones/*/*.toml; do
  check_config "$f" "$(basename "$f" .toml)"
done
for f in k8s/components/*/fengqiao.toml; do
  check_config "$f" "$(basename "$(dirname "$f")")"
done

# ---------------------------------------------------------------- registry <-> components
# Every service of the binary's registry (`fengqiao services`) has its kustomize component
# k8s/components/<name>/ listed in k8s/base/kustomization.yaml, and nothing else is there.
log "service registry vs kustomize components"
registry="$("$FQ" services | cut -f1 | sort)"
on_disk="$(for d in k8s/components/*/; do basename "$d"; done | sort)"
listed="$("$PY" -c 'import sys, yaml; print("\n".join(sorted(c.rstrip("/").rsplit("/", 1)[-1] for c in yaml.safe_load(open(sys.argv[1])).get("components") or [])))' k8s/base/kustomization.yaml)"
if [[ -z "$registry" ]]; then
  printf '    FAIL fengqiao services printed nothing\n'
  failures=$((failures + 1))
elif [[ "$registry" != "$on_disk" || "$registry" != "$listed" ]]; then
  printf '    FAIL registry: %s\n         k8s/components/: %s\n         listed in k8s/base: %s\n' \
    "$(tr '\n' ' ' <<<"$registry")" "$(tr '\n' ' ' <<<"$on_disk")" "$(tr '\n' ' ' <<<"$listed")"
  failures=$((failures + 1))
else
  printf '    ok   %s services: each has k8s/components/<name>, listed in k8s/base\n' \
    "$(wc -l <<<"$registry")"
fi

# ---------------------------------------------------------------- verdict
if [[ $failures -ne 0 ]]; then
  printf '\nFAILED: %d check(s) failed\n' "$failures" >&2
  exit 1
fi
printf '\nall deployment assets valid (Kubernetes %s)\n' "$K8S_VERSION"
