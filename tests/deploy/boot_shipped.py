#!/usr/bin/env python3
"""Boots the shipped deployment configs for real and makes one authenticated call per service.

    boot_shipped.py <fengqiao binary> <repository root> [compose|k8s-dev|k8s-prod|k8s-zones ...]

For each target — deploy/compose.yaml, and every k8s overlay rendered by `kubectl kustomize` —
this starts each service as its own `fengqiao serve` process with the config the target ships
(the compose file's mounted files; the rendered ConfigMaps, env and Secrets of each Deployment),
on a throwaway PostgreSQL cluster, and calls one authenticated method of each service.

Only what a container runtime or a cluster would provide is supplied here, and each substitution
is the documented bootstrap of the README ("Deploying"), not a test-only shortcut:

* keys: `fengqiao keygen` makes the signing key and the public key set; the public key set
  replaces the (empty) shipped one — for k8s through an overlay that replaces the ConfigMap
  `fengqiao-auth-keys`, as an operator's site overlay does;
* agency registry: the sample agencies (deploy/dev/agencies.toml) replace the (empty) seed —
  for k8s the ConfigMap `router-data`, again by a site overlay; for the zones overlay its
  k8s/overlays/zones/agencies.example.toml (police and court agencies `delivery = "pull"`);
* Secrets: `<service>-database` URLs point at the throwaway cluster (with `{service}` for a
  process running several services); for the prod overlay a CA and one certificate per service
  (openssl) stand in for `<service>-tls` (cert-manager's shape); the zones overlay's pulling
  services get the keygen signing key as `<service>-service-key` (its public half is in the
  key set, as the README's bootstrap says);
* the personal-information key: `fengqiao pii-keys generate` writes one key file, which stands
  in for the compose file's `pii-keys` volume (its one-shot `pii-keys` service runs that same
  command) and for the Secret `fengqiao-pii-keys` of each k8s overlay (one per namespace, every
  service mounting it, as k8s/base/secrets.example.yaml says);
* network: each mount path is placed under a per-service root directory, and the names the
  configs dial (`router:50051`, `router.fengqiao.svc:50051`, `postgres:5432`) and listen on
  (`0.0.0.0:50051`, `0.0.0.0:9090`) are mapped to loopback ports. `otlp_endpoint` is dropped:
  there is no collector here (the trace test has its own receiver).

Everything else — every key of every config, the data files (holiday calendar, routes), the
container arguments and environment — is used exactly as shipped. Exit status 0 when every
service of every target answered OK; otherwise the failing service's log tail is printed.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request

import grpc
import yaml

# One method per service, called with an empty request (every field optional), as the actor
# that may call it. Any status but OK fails the boot.
CALLS = {
    "router": ("/fengqiao.router.v1.RouteService/ListRoutes", "xigang-bayilu-station/officer-01"),
    "police-referral": (
        "/fengqiao.policereferral.v1.PoliceReferralService/ListReferrals",
        "xigang-bayilu-station/officer-01",
    ),
    "mediation": (
        "/fengqiao.mediation.v1.MediationService/ListCases",
        "xigang-mediation-committee/director",
    ),
    "court-diversion": (
        "/fengqiao.courtdiversion.v1.CourtDiversionService/ListCases",
        "xigang-court/clerk-01",
    ),
    "judicial-confirmation": (
        "/fengqiao.judicialconfirmation.v1.JudicialConfirmationService/ListApplications",
        "xigang-court/judge-01",
    ),
    "admin-dispute": (
        "/fengqiao.admindispute.v1.AdminDisputeService/ListDisputes",
        "xigang-admin-dispute-centre/coordinator-01",
    ),
}


_TAKEN = set()


def free_port():
    """A free loopback port below the kernel's ephemeral range.

    A port the kernel hands out for bind(0) comes from the ephemeral range, which the services'
    own outgoing connections (to PostgreSQL, to the router) also draw their source ports from;
    between this check and the service's bind one of them can take it (seen once: "admin listen
    on 127.0.0.1:38005: Address already in use"). Ports below that range are never given to an
    outgoing connection, so a port free here stays free unless another program binds it.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    first = max(1024, low - 12000)
    start = first + (os.getpid() * 7919) % (low - first)
    for i in range(low - first):
        port = first + (start - first + i) % (low - first)
        if port in _TAKEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _TAKEN.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {first}..{low}")


def log(msg):
    print(f"    {msg}", flush=True)


class Pg:
    """A throwaway PostgreSQL cluster (initdb as an unprivileged user when run as root)."""

    def __init__(self, work):
        self.dir = os.path.join(work, "pg")
        os.makedirs(self.dir)
        self.port = free_port()
        bindir = self._bindir()
        self.initdb = os.path.join(bindir, "initdb")
        self.pg_ctl = os.path.join(bindir, "pg_ctl")
        self.psql = shutil.which("psql") or os.path.join(bindir, "psql")
        self.prefix = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        data = os.path.join(self.dir, "data")
        self._run([self.initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        self._run(
            [
                self.pg_ctl, "-D", data, "-l", os.path.join(self.dir, "log"), "-w", "start",
                "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
            ]
        )
        self.data = data

    @staticmethod
    def _bindir():
        found = shutil.which("initdb")
        if found:
            return os.path.dirname(found)
        for root in sorted(os.listdir("/usr/lib/postgresql"), reverse=True):
            cand = os.path.join("/usr/lib/postgresql", root, "bin")
            if os.path.exists(os.path.join(cand, "initdb")):
                return cand
        sys.exit("PostgreSQL server binaries (initdb) not found: run scripts/install-deps.sh")

    def _run(self, argv):
        subprocess.run(self.prefix + argv, check=True, stdout=subprocess.DEVNULL, cwd="/")

    def sql(self, text):
        subprocess.run(
            [self.psql, "-v", "ON_ERROR_STOP=1", "-q", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-d", "postgres"],
            input=text.encode(), check=True, stdout=subprocess.DEVNULL,
        )

    def stop(self):
        subprocess.run(self.prefix + [self.pg_ctl, "-D", self.data, "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")


class Unit:
    """One service process: its config text, the files mounted into it, its environment."""

    def __init__(self, service, args, env):
        # `--service a,b`: one process running several services; named after the first.
        self.services = service.split(",")
        self.service = self.services[0]
        self.args = args
        self.env = env
        self.files = {}  # absolute container path -> bytes
        self.dirs = set()  # mounted directories (a ConfigMap may be empty: routes_dir)
        self.proc = None

    def config_path(self):
        i = self.args.index("--config")
        return self.args[i + 1]


def map_names(text, ports):
    """The names the shipped configs dial, mapped to the loopback ports of this run."""
    def sub(m):
        scheme, host, port = m.group(1), m.group(2), m.group(3)
        svc = host.split(".")[0]
        if svc in ports and port == "50051":
            return f"{scheme}127.0.0.1:{ports[svc]}"
        return m.group(0)
    return re.sub(r"(https?://)([a-z0-9.-]+):(\d+)", sub, text)


def start(unit, root, ports, admin_ports, bin_path):
    base = os.path.join(root, unit.service)
    os.makedirs(base)
    files = dict(unit.files)
    cfg_path = unit.config_path()
    cfg = files[cfg_path].decode()
    doc = tomllib.loads(cfg)
    # Listen addresses are the container's; here each service gets its own loopback ports.
    assert doc.get("listen", "0.0.0.0:50051").endswith(":50051"), unit.service
    cfg = re.sub(r'(?m)^listen\s*=.*$', f'listen = "127.0.0.1:{ports[unit.service]}"', cfg)
    cfg = re.sub(r'(?m)^admin_listen\s*=.*$',
                 f'admin_listen = "127.0.0.1:{admin_ports[unit.service]}"', cfg)
    cfg = re.sub(r'(?m)^otlp_endpoint\s*=.*$', "", cfg)
    cfg = map_names(cfg, ports)
    # Every mounted path lives under this service's root.
    cfg = cfg.replace('"/etc/fengqiao/', f'"{base}/etc/fengqiao/')
    cfg = cfg.replace('"/var/lib/fengqiao', f'"{base}/var/lib/fengqiao')
    files[cfg_path] = cfg.encode()
    for path, content in files.items():
        dest = base + path
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as f:
            f.write(content)
    for d in unit.dirs:
        os.makedirs(base + d, exist_ok=True)
    os.makedirs(os.path.join(base, "var/lib/fengqiao"), exist_ok=True)
    args = [a if a != cfg_path else base + cfg_path for a in unit.args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FENGQIAO_")}
    env.update(unit.env)
    env.pop("FENGQIAO_OTLP_ENDPOINT", None)
    # The pull worker says at info when its streams are open (wait_pulling).
    env["RUST_LOG"] = "warn,fengqiao_kit::pull=info"
    unit.log = os.path.join(base, "log")
    unit.proc = subprocess.Popen([bin_path] + args, cwd=os.path.join(base, "var/lib/fengqiao"),
                                 env=env, stdout=open(unit.log, "wb"), stderr=subprocess.STDOUT)
    unit.tls = "tls" in doc and bool(doc["tls"].get("cert_file"))
    unit.base = base
    unit.doc = doc


def wait_ready(unit, admin_port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if unit.proc.poll() is not None:
            raise RuntimeError(f"{unit.service} exited with {unit.proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{unit.service} not ready after {timeout} s")


def wait_pulling(unit, admin_port, streams, timeout=30):
    """The pull worker has opened one `PullMessages` stream per configured agency (its log
    says so; a refused stream fails the boot)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = open(unit.log, "rb").read().decode(errors="replace")
        if text.count("pull stream open") >= streams:
            return
        if "pull stream failed" in text:
            raise RuntimeError(f"{unit.service}: a pull stream failed")
        time.sleep(0.2)
    raise RuntimeError(f"{unit.service}: {streams} pull streams not open after {timeout} s")


def call(unit, service, port, token, creds):
    method, _ = CALLS[service]
    target = f"127.0.0.1:{port}"
    if unit.tls:
        channel = grpc.secure_channel(
            target, creds, options=[("grpc.ssl_target_name_override", unit.service)]
        )
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        stub = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        stub(b"", metadata=[("authorization", f"Bearer {token}")], timeout=10)


def certs(work, services):
    """A CA and one certificate per service (SANs: its name and 127.0.0.1), like cert-manager's
    `<service>-tls` Secrets (tls.crt, tls.key, ca.crt); a client certificate for the caller."""
    d = os.path.join(work, "pki")
    os.makedirs(d)
    def ossl(*a):
        subprocess.run(["openssl", *a], check=True, cwd=d, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=boot-test-ca")
    out = {}
    for name in list(services) + ["client"]:
        ext = os.path.join(d, f"{name}.ext")
        with open(ext, "w") as f:
            f.write(f"subjectAltName=DNS:{name},DNS:{name}.fengqiao.svc,IP:127.0.0.1\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n")
        ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", ext)
        # rustls reads PKCS#8 keys.
        ossl("pkcs8", "-topk8", "-nocrypt", "-in", f"{name}.key", "-out", f"{name}.pk8")
        rd = lambda fn: open(os.path.join(d, fn), "rb").read()
        out[name] = {"tls.crt": rd(f"{name}.crt"), "tls.key": rd(f"{name}.pk8"),
                     "ca.crt": rd("ca.crt")}
    return out


def compose_units(root, pg, public_keys, agencies, pii_keys):
    with open(os.path.join(root, "deploy/compose.yaml")) as f:
        doc = yaml.safe_load(f)
    named_volumes = set((doc.get("volumes") or {}).keys())
    # What this run substitutes for the volume must be what the one-shot service makes.
    maker = " ".join(doc["services"].get("pii-keys", {}).get("command") or [])
    if "pii-keys generate" not in maker or "/var/lib/fengqiao/pii-keys.json" not in maker:
        raise RuntimeError("compose: no one-shot pii-keys service generating pii-keys.json")
    pg.sql(open(os.path.join(root, "deploy/postgres/init.sql")).read())
    units = []
    for name, svc in doc["services"].items():
        cmd = svc.get("command") or []
        if not cmd or cmd[0] != "serve":
            continue
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        if "FENGQIAO_DATABASE_URL" in env:
            env["FENGQIAO_DATABASE_URL"] = env["FENGQIAO_DATABASE_URL"].replace(
                "@postgres:5432/", f"@127.0.0.1:{pg.port}/")
        unit = Unit(cmd[cmd.index("--service") + 1], cmd, env)
        for vol in svc.get("volumes") or []:
            src, dst = vol.split(":")[:2]
            if src in named_volumes:
                # The one named volume a `serve` service mounts: the key file the one-shot
                # `pii-keys` service writes into it.
                if src != "pii-keys":
                    raise RuntimeError(f"{name}: unknown named volume {src}")
                unit.files[os.path.join(dst, "pii-keys.json")] = pii_keys
                continue
            host = os.path.normpath(os.path.join(root, "deploy", src))
            if os.path.isdir(host):
                for dirpath, _, fns in os.walk(host):
                    for fn in fns:
                        p = os.path.join(dirpath, fn)
                        unit.files[dst + p[len(host):]] = open(p, "rb").read()
            else:
                unit.files[dst] = open(host, "rb").read()
        # The bootstrap: a real key set and registry in place of the empty shipped ones.
        for path in list(unit.files):
            if path.endswith("/public_keys.json"):
                unit.files[path] = public_keys
            if path.endswith("/router/agencies.toml"):
                unit.files[path] = agencies
        units.append(unit)
    return units


def k8s_units(root, overlay, work, pg, public_keys, agencies, pki, pii_keys, service_key=None):
    site = os.path.join(work, f"site-{overlay}")
    os.makedirs(site)
    open(os.path.join(site, "public_keys.json"), "wb").write(public_keys)
    open(os.path.join(site, "agencies.toml"), "wb").write(agencies)
    shutil.copy(os.path.join(root, "k8s/components/router/data/holidays.toml"), site)
    # The documented site overlay (README, "Deploying"): the shipped overlay plus this
    # deployment's public keys and agency registry. The zones overlay has one key set per
    # zone namespace and the registry in the hub's.
    zones = ["hub", "police", "court", "gov"] if overlay == "zones" else [None]
    gens = ""
    for z in zones:
        ns = f"\n    namespace: fengqiao-{z}" if z else ""
        gens += f"""  - name: fengqiao-auth-keys{ns}
    behavior: replace
    files:
      - public_keys.json
"""
    hub = "\n    namespace: fengqiao-hub" if overlay == "zones" else ""
    with open(os.path.join(site, "kustomization.yaml"), "w") as f:
        f.write(f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {os.path.relpath(os.path.join(root, 'k8s/overlays', overlay), site)}
configMapGenerator:
{gens}  - name: router-data{hub}
    behavior: replace
    files:
      - agencies.toml
      - holidays.toml
""")
    rendered = subprocess.run(["kubectl", "kustomize", site], check=True,
                              capture_output=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    cms = {(d["metadata"].get("namespace"), d["metadata"]["name"]): d
           for d in docs if d["kind"] == "ConfigMap"}
    units = []
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        pod = d["spec"]["template"]["spec"]
        (c,) = [c for c in pod["containers"] if c["name"] == d["metadata"]["name"]]
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        ns = d["metadata"].get("namespace")
        services = c["args"][c["args"].index("--service") + 1].split(",")
        service = services[0]
        env = {}
        dbs = [f"{overlay}_{s}".replace("-", "_") for s in services]
        db = dbs[0] if len(services) == 1 else f"{overlay}_{{service}}"
        database_secret = {
            "FENGQIAO_DATABASE_URL": f"postgres://postgres@127.0.0.1:{pg.port}/{db}"
        }
        for src in c.get("envFrom", []):
            # The Secret `<service>-database` (k8s/base/secrets.example.yaml).
            if src.get("secretRef", {}).get("name") != f"{service}-database":
                raise RuntimeError(f"{service}: unknown envFrom {src}")
            env.update(database_secret)
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            elif e.get("valueFrom", {}).get("secretKeyRef"):
                ref = e["valueFrom"]["secretKeyRef"]
                if ref["name"] != f"{service}-database" or ref["key"] not in database_secret:
                    raise RuntimeError(f"{service}: unknown secret {ref}")
                env[e["name"]] = database_secret[ref["key"]]
            elif "valueFrom" in e:
                pass  # fieldRef (pod name, namespace): informational only
        if "FENGQIAO_DATABASE_URL" in env:
            for one in dbs:
                pg.sql(f"CREATE DATABASE {one};")
        unit = Unit(",".join(services), c["args"], env)
        for m in c.get("volumeMounts", []):
            v = vols[m["name"]]
            if "configMap" in v:
                if not m.get("subPath"):
                    unit.dirs.add(m["mountPath"])
                data = cms[(ns, v["configMap"]["name"])].get("data", {})
                items = v["configMap"].get("items")
                pairs = [(i["key"], i["path"]) for i in items] if items else \
                    [(k, k) for k in data]
                for key, rel in pairs:
                    if m.get("subPath"):
                        if rel == m["subPath"]:
                            unit.files[m["mountPath"]] = data[key].encode()
                    else:
                        unit.files[os.path.join(m["mountPath"], rel)] = data[key].encode()
            elif "secret" in v:
                name = v["secret"]["secretName"]
                if name == f"{service}-service-key" and service_key is not None:
                    unit.files[os.path.join(m["mountPath"], "service-key.json")] = service_key
                    continue
                if name == "fengqiao-pii-keys":
                    unit.files[os.path.join(m["mountPath"], "pii-keys.json")] = pii_keys
                    continue
                if name != f"{service}-tls":
                    raise RuntimeError(f"{service}: unknown secret {name}")
                for k, content in pki[service].items():
                    unit.files[os.path.join(m["mountPath"], k)] = content
            elif "emptyDir" in v:
                pass
            else:
                raise RuntimeError(f"{service}: unsupported volume {v}")
        units.append(unit)
    return units


def boot(target, units, bin_path, key_file, work, pki):
    root = os.path.join(work, f"run-{target}")
    os.makedirs(root)
    ports = {u.service: free_port() for u in units}
    admin = {u.service: free_port() for u in units}
    units.sort(key=lambda u: u.service != "router")  # the hub first, as compose's depends_on
    creds = None
    if pki:
        creds = grpc.ssl_channel_credentials(
            root_certificates=pki["client"]["ca.crt"],
            private_key=pki["client"]["tls.key"],
            certificate_chain=pki["client"]["tls.crt"],
        )
    try:
        for u in units:
            start(u, root, ports, admin, bin_path)
            wait_ready(u, admin[u.service])
            # The prod overlay promises mutual TLS between all services.
            if pki and not u.tls:
                raise RuntimeError(f"{u.service}: no [tls] in the prod config")
        for u in units:
            for svc in u.services:
                if svc not in CALLS:
                    raise RuntimeError(f"no call known for service {svc}: add one to CALLS")
                _, actor = CALLS[svc]
                issuer = u.doc.get("auth", {}).get("issuer", "fengqiao")
                token = subprocess.run(
                    [bin_path, "token", "--key-file", key_file, "--issuer", issuer, "--as", actor],
                    check=True, capture_output=True, text=True,
                ).stdout.strip()
                call(u, svc, ports[u.service], token, creds)
                log(f"ok   {target}: {svc} ({'mTLS' if u.tls else 'plaintext'}) answered "
                    f"{CALLS[svc][0].rsplit('/', 1)[1]} as {actor}")
            pulls = u.doc.get("inbox", {}).get("pull_agencies", [])
            if pulls:
                wait_pulling(u, admin[u.service], len(pulls))
                log(f"ok   {target}: {u.service} pulls for {', '.join(pulls)}")
    except Exception as e:  # noqa: BLE001 — report which service and its log, then fail
        print(f"    FAIL {target}: {e}", flush=True)
        for u in units:
            if u.proc is not None and os.path.exists(u.log):
                tail = open(u.log, "rb").read()[-3000:].decode(errors="replace")
                print(f"---- {u.service} log (tail)\n{tail}", flush=True)
        return False
    finally:
        for u in units:
            if u.proc is not None and u.proc.poll() is None:
                u.proc.send_signal(signal.SIGTERM)
        for u in units:
            if u.proc is not None:
                try:
                    u.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    u.proc.kill()
    return True


def main():
    bin_path = os.path.abspath(sys.argv[1])
    root = os.path.abspath(sys.argv[2])
    targets = sys.argv[3:] or ["compose", "k8s-dev", "k8s-prod", "k8s-zones"]
    work = tempfile.mkdtemp(prefix="fengqiao-boot-")
    os.chmod(work, 0o755)
    pg = None
    ok = True
    try:
        key_file = os.path.join(work, "signing-key.json")
        keys_file = os.path.join(work, "public_keys.json")
        subprocess.run([bin_path, "keygen", "--kid", "boot-1", "--private-key-out", key_file,
                        "--public-keys-out", keys_file], check=True, stdout=subprocess.DEVNULL)
        public_keys = open(keys_file, "rb").read()
        pii_file = os.path.join(work, "pii-keys.json")
        subprocess.run([bin_path, "pii-keys", "generate", "--kid", "boot-1", "--out", pii_file],
                       check=True, stdout=subprocess.DEVNULL)
        pii_keys = open(pii_file, "rb").read()
        agencies = open(os.path.join(root, "deploy/dev/agencies.toml"), "rb").read()
        pg = Pg(work)
        for target in targets:
            if target == "compose":
                units, pki = compose_units(root, pg, public_keys, agencies, pii_keys), None
            elif target.startswith("k8s-"):
                overlay = target[4:]
                rendered_services = [s for s in CALLS]
                pki = certs(os.path.join(work, overlay), rendered_services) \
                    if overlay == "prod" else None
                if overlay == "zones":
                    seed = open(os.path.join(root, "k8s/overlays/zones/agencies.example.toml"),
                                "rb").read()
                    units = k8s_units(root, overlay, work, pg, public_keys, seed, pki, pii_keys,
                                      service_key=open(key_file, "rb").read())
                else:
                    units = k8s_units(root, overlay, work, pg, public_keys, agencies, pki,
                                      pii_keys)
            else:
                sys.exit(f"unknown target {target}")
            names = sorted(u.service for u in units)
            log(f"{target}: {len(units)} services ({', '.join(names)})")
            ok = boot(target, units, bin_path, key_file, work, pki) and ok
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("shipped configs boot: " + ("all services answered" if ok else "FAILED"), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
