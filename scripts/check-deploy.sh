#!/usr/bin/env bash
# Checks the deployment files without Docker, Kubernetes or Slurm:
#   - docker-compose.yml against the Compose specification's JSON schema
#     (deploy/compose-spec.schema.json), plus crossfold's own rules (GPU
#     reservation, health check, secrets, grace period, no token on a command
#     line) and its consistency with the Dockerfile's stages;
#   - the Dockerfile's stages and .dockerignore;
#   - every YAML file under deploy/k8s/: parses, apiVersion/kind/metadata.name,
#     the Kubernetes JSON schemas (strict, from the kubernetes-validate package),
#     the coordinator's probes, the worker's GPU request and grace period, and
#     that Secrets, claims, Services and kustomization resources referred to
#     exist; with kubectl present, `kubectl kustomize` renders the set;
#   - the Slurm batch script (`bash -n`, #SBATCH options) and its test
#     (deploy/slurm/test.sh), which runs it under a fake Slurm environment;
#   - shellcheck on the shell scripts when shellcheck is installed.
# Python packages go into .venv-ci/ (created once, reused after). Prints
# each failed check (-v: every check) and exits non-zero when any failed.
#
#   bash scripts/check-deploy.sh [-v]
set -euo pipefail
if [ "${1:-}" = "-v" ]; then
  export CHECK_DEPLOY_VERBOSE=1
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

venv="$root/.venv-ci"
requirements=(jsonschema==4.26.0 PyYAML==6.0.4 kubernetes-validate==1.37.0)
stamp="$venv/.crossfold-check-deploy-$(printf '%s\n' "${requirements[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  python="${PYTHON:-python3}"
  if ! command -v "$python" >/dev/null 2>&1; then
    echo "check-deploy: $python not found; install Python 3 with venv" >&2
    exit 1
  fi
  echo "== setting up $venv (${requirements[*]})"
  [ -x "$venv/bin/pip" ] || "$python" -m venv "$venv"
  # Keep the environment out of git without touching .gitignore.
  printf '*\n' >"$venv/.gitignore"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
  touch "$stamp"
fi

failed=0

echo "== docker-compose.yml, Dockerfile, deploy/k8s"
"$venv/bin/python" - <<'PY' || failed=1
import glob
import os
import re
import shutil
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSIONS = ["1.30.0", "1.37.0"]
passed = 0
problems = []


VERBOSE = os.environ.get("CHECK_DEPLOY_VERBOSE") == "1"


def ok(msg):
    global passed
    passed += 1
    if VERBOSE:
        print(f"  ok   {msg}")


def bad(msg):
    problems.append(msg)
    print(f"  FAIL {msg}")


def check(cond, msg):
    ok(msg) if cond else bad(msg)
    return cond


def load_yaml(path):
    try:
        with open(path) as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        bad(f"{path}: cannot parse: {e}")
        return None


def seconds(duration):
    """Compose duration ('2m', '1m30s', '90s') in seconds, or None."""
    if isinstance(duration, (int, float)):
        return float(duration)
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", str(duration))
    if not parts or "".join(n + u for n, u in parts) != str(duration):
        return None
    unit = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * unit[u] for n, u in parts)


def flags(args):
    """Flag names in an argument list, for both `--f v` and `--f=v`."""
    return [a.split("=", 1)[0] for a in args if isinstance(a, str) and a.startswith("--")]


def flag_value(args, name):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if isinstance(a, str) and a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def no_token_on_command_line(where, args):
    leaked = [a for a in args if isinstance(a, str) and (a == "--token" or a.startswith("--token="))]
    check(not leaked, f"{where}: no --token value on the command line")


# ---------------------------------------------------------------- Dockerfile
stages = {}
current = None
with open("Dockerfile") as f:
    # Join continuation lines.
    text = re.sub(r"\\\n", " ", f.read())
for line in text.splitlines():
    s = line.strip()
    if not s or s.startswith("#"):
        continue
    m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", s, re.I)
    if m:
        current = (m.group(2) or f"stage{len(stages)}").lower()
        stages[current] = []
        continue
    if current:
        stages[current].append(s)
check({"builder", "coordinator", "worker"} <= set(stages), f"Dockerfile: stages builder, coordinator, worker ({', '.join(stages)})")
b = " ".join(stages.get("builder", []))
check("CROSSFOLD_TORCH=cuda bash scripts/setup-libtorch.sh" in b, "Dockerfile builder: libtorch via CROSSFOLD_TORCH=cuda scripts/setup-libtorch.sh")
check(". scripts/env.sh" in b and "cargo build --release --workspace" in b, "Dockerfile builder: `. scripts/env.sh` then cargo build --release --workspace")
# scripts/env.sh needs bash (BASH_SOURCE); RUN uses /bin/sh unless SHELL says otherwise.
check(any(re.match(r'SHELL\s*\[\s*"/(usr/)?bin/bash"', l) for l in stages.get("builder", [])),
      "Dockerfile builder: RUN uses bash (scripts/env.sh is bash)")
for name in ("coordinator", "worker"):
    lines = stages.get(name, [])
    users = [l.split(None, 1)[1] for l in lines if l.upper().startswith("USER ")]
    check(users and users[-1].split(":")[0] not in ("0", "root"), f"Dockerfile {name}: runs as a non-root USER ({users[-1] if users else 'none'})")
    check(any(l.upper().startswith("ENTRYPOINT") for l in lines), f"Dockerfile {name}: has an ENTRYPOINT")
    for l in lines:
        m = re.search(r"--from=(\S+)", l)
        if m:
            check(m.group(1).lower() in stages, f"Dockerfile {name}: COPY --from={m.group(1)} names a stage")
coord = " ".join(stages.get("coordinator", []))
check("crossfold-worker" not in coord and "torch" not in coord and "python" not in coord.lower(),
      "Dockerfile coordinator: no crossfold-worker, libtorch or Python")
check(re.search(r"COPY --from=builder \S*/crossfold /usr/local/bin/crossfold\b", coord) is not None,
      "Dockerfile coordinator: carries the crossfold binary")
work = " ".join(stages.get("worker", []))
check("crossfold-worker" in work and re.search(r"LD_LIBRARY_PATH=\S*torch/lib", work) is not None,
      "Dockerfile worker: crossfold-worker with LD_LIBRARY_PATH at torch/lib")
for l in stages.get("builder", []):
    m = re.match(r"COPY\s+(?!--from)(.+)\s+\S+$", l)
    if m:
        for src in m.group(1).split():
            if not src.startswith("--"):
                check(os.path.exists(src), f"Dockerfile builder: COPY source {src} exists")
with open(".dockerignore") as f:
    ignored = {l.strip().rstrip("/") for l in f if l.strip() and not l.startswith("#")}
missing = {"target", ".venv*", "out", "crossfold-data", ".git", "secrets"} - ignored
check(not missing, f".dockerignore: ignores target/, .venv*, out/, crossfold-data/, .git, secrets/{' (missing: ' + ', '.join(sorted(missing)) + ')' if missing else ''}")

# ------------------------------------------------------- docker-compose.yml
with open("deploy/compose-spec.schema.json") as f:
    import json
    schema = json.load(f)
docs = load_yaml("docker-compose.yml")
if docs is not None and check(len(docs) == 1, "docker-compose.yml: one YAML document"):
    compose = docs[0]
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    for e in errors:
        bad(f"docker-compose.yml: {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}")
    check(not errors, "docker-compose.yml: valid against the Compose specification schema")
    services = compose.get("services", {})
    top_secrets = compose.get("secrets", {}) or {}
    top_volumes = compose.get("volumes", {}) or {}
    check({"coordinator", "worker"} <= set(services), "docker-compose.yml: services coordinator and worker")
    for name, svc in services.items():
        target = (svc.get("build") or {}).get("target")
        check(target in stages, f"compose {name}: build target {target!r} is a Dockerfile stage")
        mounted = {}
        for s in svc.get("secrets", []):
            src = s if isinstance(s, str) else s.get("source")
            tgt = s if isinstance(s, str) else s.get("target", src)
            check(src in top_secrets, f"compose {name}: secret {src} is defined")
            mounted["/run/secrets/" + tgt] = src
        for v in svc.get("volumes", []):
            if isinstance(v, dict) and v.get("type") == "volume":
                check(v.get("source") in top_volumes, f"compose {name}: volume {v.get('source')} is declared")
        command = svc.get("command", [])
        hc = (svc.get("healthcheck") or {}).get("test", [])
        for arg in list(command) + list(hc):
            if isinstance(arg, str) and arg.startswith("/run/secrets/"):
                check(arg in mounted, f"compose {name}: {arg} is a secret mounted in the service")
        no_token_on_command_line(f"compose {name}", list(command) + list(hc))
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        check(not env.get("CROSSFOLD_TOKEN"), f"compose {name}: no token value in the environment")
    c = services.get("coordinator", {})
    cf = flags(c.get("command", []))
    check("coordinator" in c.get("command", []) and {"--tls-cert", "--tls-key", "--tokens-file", "--metrics-listen"} <= set(cf)
          and "--insecure" not in cf, "compose coordinator: TLS, tokens file and metrics, not --insecure")
    check("health" in (c.get("healthcheck") or {}).get("test", []), "compose coordinator: healthcheck runs `crossfold health`")
    vols = {v.get("target"): v for v in c.get("volumes", []) if isinstance(v, dict)}
    check(vols.get("/var/lib/crossfold", {}).get("type") == "volume", "compose coordinator: named volume at /var/lib/crossfold")
    check(vols.get("/data", {}).get("read_only") is True, "compose coordinator: data read-only at /data")
    check(any(str(p).endswith(":9464") for p in c.get("ports", [])), "compose coordinator: metrics port published")
    w = services.get("worker", {})
    wf = flags(w.get("command", []))
    check({"--token-file", "--fetch-data", "--ca"} <= set(wf), "compose worker: --token-file, --ca and --fetch-data")
    check(((w.get("depends_on") or {}).get("coordinator") or {}).get("condition") == "service_healthy",
          "compose worker: depends on a healthy coordinator")
    deploy = w.get("deploy") or {}
    check("replicas" in deploy, "compose worker: deploy.replicas")
    devs = ((deploy.get("resources") or {}).get("reservations") or {}).get("devices") or []
    check(any(d.get("driver") == "nvidia" and d.get("count") == 1 and "gpu" in d.get("capabilities", []) for d in devs),
          "compose worker: reserves one nvidia GPU (count 1, capabilities [gpu])")
    grace = seconds(w.get("stop_grace_period", "10s"))
    check(grace is not None and grace >= 60, f"compose worker: stop_grace_period >= 60 s ({w.get('stop_grace_period')})")

# ---------------------------------------------------------------- deploy/k8s
k8s_files = sorted(glob.glob("deploy/k8s/*.yaml") + glob.glob("deploy/k8s/*.yml"))
objects = []  # (file, doc)
for path in k8s_files:
    docs = load_yaml(path)
    if docs is None:
        continue
    ok(f"{path}: parses ({len(docs)} document(s))")
    for d in docs:
        if not isinstance(d, dict):
            bad(f"{path}: a document is not a mapping")
            continue
        objects.append((path, d))
        kind = d.get("kind")
        if kind == "Kustomization":
            check(str(d.get("apiVersion", "")).startswith("kustomize.config.k8s.io/"), f"{path}: Kustomization apiVersion")
            continue
        name = (d.get("metadata") or {}).get("name")
        if not check(bool(d.get("apiVersion")) and bool(kind) and bool(name), f"{path}: {kind}/{name}: apiVersion, kind, metadata.name"):
            continue
        for v in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(d, v, strict=True)
                ok(f"{path}: {kind}/{name}: valid for Kubernetes {v} (strict schema)")
            except kubernetes_validate.ValidationError as e:
                bad(f"{path}: {kind}/{name}: Kubernetes {v}: {'.'.join(map(str, e.path))}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                bad(f"{path}: {kind}/{name}: no schema for it in Kubernetes {v}: {e}")


def find(kind, name=None):
    return [(p, d) for p, d in objects if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]


example_secrets = {d["metadata"]["name"]: set((d.get("stringData") or {}) | (d.get("data") or {}))
                   for p, d in objects if d.get("kind") == "Secret" and p.endswith("secret.example.yaml")}
check(bool(example_secrets), "deploy/k8s/secret.example.yaml: shows the Secrets")
with open("deploy/k8s/secret.example.yaml") as f:
    example_text = f.read()
check(re.search(r"-----BEGIN [A-Z ]*-----\s*\n\s*[A-Za-z0-9+/=]{40,}", example_text) is None,
      "deploy/k8s/secret.example.yaml: holds no real certificate or key")
claims = {d["metadata"]["name"] for p, d in objects if d.get("kind") == "PersistentVolumeClaim"}
services = {d["metadata"]["name"]: d for p, d in objects if d.get("kind") == "Service"}


def pod_checks(where, pod):
    """Secrets and claims exist; secret files named in args are keys of their Secret."""
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    for v in vols.values():
        if "secret" in v:
            check(v["secret"]["secretName"] in example_secrets, f"{where}: Secret {v['secret']['secretName']} is in secret.example.yaml")
        if "persistentVolumeClaim" in v:
            check(v["persistentVolumeClaim"]["claimName"] in claims, f"{where}: claim {v['persistentVolumeClaim']['claimName']} is defined")
    for c in pod.get("containers", []):
        args = list(c.get("command", [])) + list(c.get("args", []))
        no_token_on_command_line(f"{where} {c['name']}", args)
        check(not any(e.get("name") == "CROSSFOLD_TOKEN" and "value" in e for e in c.get("env", [])),
              f"{where} {c['name']}: no token value in the environment")
        for m in c.get("volumeMounts", []):
            v = vols.get(m["name"])
            if v and "secret" in v:
                keys = example_secrets.get(v["secret"]["secretName"], set())
                for a in args:
                    path = a.split("=", 1)[1] if a.startswith("--") and "=" in a else a
                    if path.startswith(m["mountPath"].rstrip("/") + "/"):
                        key = path[len(m["mountPath"].rstrip("/")) + 1:]
                        check(key in keys, f"{where} {c['name']}: {path} is key {key!r} of Secret {v['secret']['secretName']}")


# The coordinator StatefulSet.
sts = find("StatefulSet")
if check(len(sts) == 1, "deploy/k8s: one coordinator StatefulSet"):
    p, d = sts[0]
    spec = d["spec"]
    pod = spec["template"]["spec"]
    check(spec.get("replicas") == 1, f"{p}: 1 replica")
    vct = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    c = pod["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    check(mounts.get("/var/lib/crossfold") in vct, f"{p}: /var/lib/crossfold on a volumeClaimTemplate")
    for probe in ("livenessProbe", "readinessProbe"):
        cmd = ((c.get(probe) or {}).get("exec") or {}).get("command", [])
        check(cmd[:2] == ["crossfold", "health"], f"{p}: {probe} runs `crossfold health`")
    args = c.get("args", [])
    cf = flags(args)
    check({"--tls-cert", "--tls-key", "--tokens-file", "--metrics-listen"} <= set(cf) and "--insecure" not in cf,
          f"{p}: TLS, tokens file and metrics, not --insecure")
    check(spec.get("serviceName") in services, f"{p}: serviceName {spec.get('serviceName')} is a Service")
    labels = spec["template"]["metadata"]["labels"]
    check(spec["selector"]["matchLabels"].items() <= labels.items(), f"{p}: selector matches the pod labels")
    pod_checks(p, pod)

# The coordinator Service.
svc = services.get("crossfold-coordinator")
if check(svc is not None, "deploy/k8s: Service crossfold-coordinator"):
    ports = {pt["port"] for pt in svc["spec"]["ports"]}
    check({50051, 9464} <= ports, "Service crossfold-coordinator: ports 50051 (gRPC) and 9464 (metrics)")
    ann = svc["metadata"].get("annotations") or {}
    check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == "9464",
          "Service crossfold-coordinator: prometheus.io annotations")
    if sts:
        labels = sts[0][1]["spec"]["template"]["metadata"]["labels"]
        check(svc["spec"]["selector"].items() <= labels.items(), "Service crossfold-coordinator: selects the coordinator pod")

# The worker Deployment.
deps = find("Deployment")
if check(len(deps) == 1, "deploy/k8s: one worker Deployment"):
    p, d = deps[0]
    spec = d["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    res = c.get("resources") or {}
    gpu = (res.get("limits") or {}).get("nvidia.com/gpu")
    check(gpu is not None and int(gpu) >= 1, f"{p}: requests nvidia.com/gpu (limits: {gpu})")
    req = (res.get("requests") or {}).get("nvidia.com/gpu")
    check(req is None or str(req) == str(gpu), f"{p}: nvidia.com/gpu request equals its limit")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    check(grace >= 60, f"{p}: terminationGracePeriodSeconds >= 60 ({grace})")
    args = c.get("args", [])
    check({"--token-file", "--fetch-data", "--ca", "--coordinator"} <= set(flags(args)), f"{p}: --coordinator, --ca, --token-file, --fetch-data")
    url = flag_value(args, "--coordinator") or ""
    host = re.sub(r"^https?://", "", url).split(":")[0]
    check(url.startswith("https://") and host.split(".")[0] in services, f"{p}: coordinator URL {url} is https to a Service")
    labels = spec["template"]["metadata"]["labels"]
    check(spec["selector"]["matchLabels"].items() <= labels.items(), f"{p}: selector matches the pod labels")
    pod_checks(p, pod)

# kustomization.yaml
kus = [(p, d) for p, d in objects if d.get("kind") == "Kustomization"]
if check(len(kus) == 1, "deploy/k8s: one kustomization.yaml"):
    p, d = kus[0]
    res = d.get("resources", [])
    for r in res:
        check(os.path.exists(os.path.join("deploy/k8s", r)), f"{p}: resource {r} exists")
    listed = {os.path.join("deploy/k8s", r) for r in res}
    unlisted = [f for f in k8s_files if f not in listed and not f.endswith(("kustomization.yaml", "secret.example.yaml"))]
    check(not unlisted, f"{p}: lists every manifest{' (not: ' + ', '.join(unlisted) + ')' if unlisted else ''}")
    check("secret.example.yaml" not in res, f"{p}: does not include secret.example.yaml")
    kubectl = shutil.which("kubectl")
    if kubectl:
        r = subprocess.run([kubectl, "kustomize", "deploy/k8s"], capture_output=True, text=True, timeout=60)
        if check(r.returncode == 0, "kubectl kustomize deploy/k8s renders" + ("" if r.returncode == 0 else f": {r.stderr.strip()}")):
            rendered = [x for x in yaml.safe_load_all(r.stdout) if x]
            namespaced = [x for x in rendered if x.get("kind") != "Namespace"]
            check(all(x["metadata"].get("namespace") == d.get("namespace") for x in namespaced),
                  f"kubectl kustomize: every object in namespace {d.get('namespace')}")
    else:
        print("  skip kubectl kustomize (kubectl not installed; the other k8s checks ran)")

print(f"  compose, Dockerfile, k8s: {passed} passed, {len(problems)} failed")
if problems:
    print("check-deploy: problems:", file=sys.stderr)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    sys.exit(1)
PY

echo "== deploy/slurm"
sbatch_script=deploy/slurm/crossfold-workers.sbatch
for f in "$sbatch_script" deploy/slurm/test.sh scripts/check-deploy.sh; do
  if bash -n "$f"; then
    echo "  ok   bash -n $f"
  else
    echo "  FAIL bash -n $f"
    failed=1
  fi
done
for option in '--gres=gpu:' '--signal=B:TERM@' '--requeue'; do
  if grep -q -e "^#SBATCH .*$option" "$sbatch_script"; then
    echo "  ok   $sbatch_script: #SBATCH $option"
  else
    echo "  FAIL $sbatch_script: no #SBATCH $option"
    failed=1
  fi
done
if command -v shellcheck >/dev/null 2>&1; then
  if shellcheck "$sbatch_script" deploy/slurm/test.sh scripts/check-deploy.sh; then
    echo "  ok   shellcheck"
  else
    echo "  FAIL shellcheck"
    failed=1
  fi
else
  echo "  skip shellcheck (not installed)"
fi
if ! bash deploy/slurm/test.sh; then
  failed=1
fi

if [ "$failed" -ne 0 ]; then
  echo "check-deploy: FAILED (see the FAIL lines above)" >&2
  exit 1
fi
echo "check-deploy: all deployment checks passed"
