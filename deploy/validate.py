#!/usr/bin/env python3
"""Offline checks of lead2ledger's deploy artifacts, run by deploy/validate.sh (which installs
kubernetes-validate and PyYAML into its own venv and renders the compose and kustomize output).

    validate.py static                        Dockerfile/.dockerignore vs. the workspace, TOML syntax,
                                              Grafana dashboard vs. the metric names in the code
    validate.py compose RENDERED.yml...       `docker-compose config` output: mounts, secrets, commands
    validate.py k8s VERSIONS RENDERED.yml...  kustomize output: strict schemas + cross-references

Each check prints what it found wrong and the command exits 1 if anything was; silence means fine.
Nothing here talks to a network, a cluster or a Docker engine.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROBLEMS: list[str] = []

# The KEDA custom resources have no schema in kubernetes-validate (no CRD schemas ship with it and
# nothing here may download them); `check_keda` checks what lead2ledger relies on instead.
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
# The workers KEDA scales; each consumes `<amqp.namespace>.<worker>` (shared::names::WorkQueue).
WORK_QUEUES = ("mapper", "erp-writer", "crm-writer")
# The queues each worker consumes, without namespace (shared::names::WorkQueue::base_name): the
# mapper has a second queue for erp-writer's outcomes.
QUEUES_OF = {"mapper": ("mapper", "mapper.outcomes"), "erp-writer": ("erp-writer",), "crm-writer": ("crm-writer",)}


def problem(where: str, what: str) -> None:
    PROBLEMS.append(f"{where}: {what}")


def finish(name: str) -> int:
    for p in PROBLEMS:
        print(f"[validate] ERROR {p}")
    if PROBLEMS:
        print(f"[validate] {name}: {len(PROBLEMS)} problem(s)")
        return 1
    return 0


# ── the image ──────────────────────────────────────────────────────────────────────────────────

def dockerfile_bins() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text()
    m = re.search(r'^ARG BINS="([^"]+)"', text, re.M)
    if not m:
        problem("deploy/Dockerfile", 'no `ARG BINS="..."` line (the binaries the image ships)')
        return []
    return m.group(1).split()


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [l.strip().rstrip("/") for l in lines if l.strip() and not l.startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rules for the patterns we use: anchored at the context root, `**` any depth; a
    matching directory excludes everything below it."""
    parts = rel.split("/")
    for pat in patterns:
        if pat.startswith("!"):
            continue
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatchcase(prefix, pat) or (
                pat.startswith("**/") and fnmatch.fnmatchcase(parts[i - 1], pat[3:])
            ):
                return True
    return False


def cargo_bins() -> dict[str, Path]:
    """bin target → source file, from the manifests (no cargo needed: `[[bin]]` and src/bin)."""
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    bins: dict[str, Path] = {}
    for member in members:
        manifest = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        pkg = manifest["package"]["name"]
        for b in manifest.get("bin", []):
            bins[b["name"]] = ROOT / member / b.get("path", f"src/bin/{b['name']}.rs")
        if (ROOT / member / "src/main.rs").exists():
            bins[pkg] = ROOT / member / "src/main.rs"
        bin_dir = ROOT / member / "src/bin"
        if bin_dir.is_dir():
            for f in bin_dir.glob("*.rs"):
                bins.setdefault(f.stem, f)
    return bins


INCLUDE = re.compile(r'include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)')


def check_image() -> None:
    bins = dockerfile_bins()
    known = cargo_bins()
    patterns = dockerignore_patterns()
    for b in bins:
        if b not in known:
            problem("deploy/Dockerfile", f"BINS names `{b}`, which no workspace member builds")
    for must in ["Cargo.toml", "Cargo.lock", "shared/src/lib.rs", "tests/src/lib.rs"]:
        if ignored(must, patterns):
            problem(".dockerignore", f"excludes {must}, which the build needs")
    # Every file compiled into a shipped binary must be inside the build context and not ignored:
    # an include_str! of ../shared/contracts would build here and fail in `docker build`.
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    shipped_mains = {known[b].resolve() for b in bins if b in known}
    for member in members:
        for rs in (ROOT / member).rglob("*.rs"):
            rel = rs.relative_to(ROOT).as_posix()
            if "/target/" in f"/{rel}" or not rel.startswith(f"{member}/src/"):
                continue  # integration tests, benches: not in the image
            if "/src/bin/" in rel and rs.resolve() not in shipped_mains:
                continue  # a binary the image does not ship (l2l-demo, l2l-bench)
            if ignored(rel, patterns):
                problem(".dockerignore", f"excludes {rel}, which a shipped binary compiles")
            for m in INCLUDE.finditer(rs.read_text(errors="replace")):
                target = (rs.parent / m.group(1)).resolve()
                try:
                    trel = target.relative_to(ROOT).as_posix()
                except ValueError:
                    problem(rel, f'include of "{m.group(1)}" reaches outside the build context')
                    continue
                if ignored(trel, patterns) or not target.exists():
                    problem(rel, f'include of "{m.group(1)}" is missing from the build context')
    rust_version = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"]
    m = re.search(r"^ARG RUST_VERSION=(\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    if not m:
        problem("deploy/Dockerfile", "no `ARG RUST_VERSION=`")
    elif tuple(map(int, m.group(1).split("."))) < tuple(map(int, rust_version.split(".")[:2])):
        problem("deploy/Dockerfile", f"RUST_VERSION {m.group(1)} is older than rust-version {rust_version}")


# ── configuration files ────────────────────────────────────────────────────────────────────────

def check_toml() -> None:
    for f in sorted(DEPLOY.rglob("*.toml")):
        try:
            tomllib.loads(f.read_text())
        except tomllib.TOMLDecodeError as e:
            problem(f.relative_to(ROOT).as_posix(), f"not valid TOML: {e}")


# ── the Grafana dashboard ──────────────────────────────────────────────────────────────────────

def code_metric_names() -> set[str]:
    names: set[str] = set()
    for member in ["shared", "ingest", "mapper", "erp-writer", "crm-writer"]:
        for rs in (ROOT / member / "src").rglob("*.rs"):
            names.update(re.findall(r'"(l2l_[a-z0-9_]+)"', rs.read_text(errors="replace")))
    return names


def check_dashboard() -> None:
    path = DEPLOY / "grafana/lead2ledger.json"
    where = "deploy/grafana/lead2ledger.json"
    try:
        dash = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        problem(where, f"not readable JSON: {e}")
        return
    known = code_metric_names()
    uids = set()
    variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    for panel in dash.get("panels", []):
        if panel.get("type") == "row":
            continue
        pid = panel.get("id")
        if pid in uids:
            problem(where, f"panel id {pid} used twice")
        uids.add(pid)
        title = panel.get("title", f"panel {pid}")
        if not panel.get("targets"):
            problem(where, f"panel {title!r} has no query")
        for t in panel.get("targets", []):
            expr = t.get("expr", "")
            if t.get("datasource", {}).get("uid") != "${datasource}":
                problem(where, f"panel {title!r} does not use the $datasource variable")
            for var in re.findall(r"\$([A-Za-z0-9_]+)", expr):
                if not var.startswith("__") and var not in variables:
                    problem(where, f"panel {title!r} uses undefined variable ${var}")
            for metric in re.findall(r"\b(l2l_[a-z0-9_]+)", expr):
                base = re.sub(r"_(bucket|sum|count)$", "", metric)
                if base not in known and metric not in known:
                    problem(where, f"panel {title!r} queries {metric}, which no lead2ledger crate emits")


# ── docker-compose ─────────────────────────────────────────────────────────────────────────────

def check_compose(files: list[str]) -> None:
    import yaml

    bins = set(dockerfile_bins())
    for f in files:
        cfg = yaml.safe_load(Path(f).read_text())
        where = f"docker-compose ({Path(f).name})"
        services = cfg.get("services", {})
        secrets = cfg.get("secrets", {}) or {}
        for name, s in (secrets.items()):
            src = s.get("file")
            if src and not Path(src).is_file():
                problem(where, f"secret {name}: file {src} does not exist")
        for name, svc in services.items():
            for v in svc.get("volumes", []) or []:
                src = v.get("source") if isinstance(v, dict) else str(v).split(":")[0]
                vtype = v.get("type") if isinstance(v, dict) else ("bind" if src.startswith(("/", ".")) else "volume")
                if vtype == "bind" and not Path(src).exists():
                    problem(where, f"service {name}: bind mount source {src} does not exist")
            mounted = set()
            for s in svc.get("secrets", []) or []:
                src = s["source"] if isinstance(s, dict) else s
                if src not in secrets:
                    problem(where, f"service {name}: secret {src} is not declared")
                target = s.get("target", src) if isinstance(s, dict) else src
                mounted.add(target if target.startswith("/") else f"/run/secrets/{target}")
            env = svc.get("environment", {}) or {}
            if isinstance(env, list):
                env = dict(e.split("=", 1) for e in env)
            for var, val in env.items():
                if var.startswith("L2L_") and var.endswith("_FILE") and str(val).startswith("/run/secrets/"):
                    if val not in mounted:
                        problem(where, f"service {name}: {var}={val} but that secret is not mounted")
            if svc.get("image", "").startswith("${L2L_IMAGE") or "build" in svc:
                cmd = svc.get("command") or ["ingest"]
                cmd = cmd if isinstance(cmd, list) else cmd.split()
                binary = cmd[0] if cmd[0] != "/bin/sh" else None
                if binary and binary not in bins:
                    problem(where, f"service {name}: runs `{binary}`, which the image does not ship")
                if binary and binary not in {"hubspot-sim", "erpnext-sim"} and "L2L_CONFIG" not in env:
                    problem(where, f"service {name}: no L2L_CONFIG")
            hc = svc.get("healthcheck")
            if name not in {"setup", "grafana"} and not hc:
                problem(where, f"service {name}: no healthcheck")
            for dep, cond in (svc.get("depends_on") or {}).items():
                if isinstance(cond, dict) and cond.get("condition") == "service_healthy":
                    if not services.get(dep, {}).get("healthcheck"):
                        problem(where, f"service {name} waits for {dep} to be healthy, which has no healthcheck")
        prom = DEPLOY / "compose/prometheus.yml"
        pcfg = yaml.safe_load(prom.read_text())
        for job in pcfg.get("scrape_configs", []):
            for sc in job.get("static_configs", []):
                for target in sc.get("targets", []):
                    host = target.split(":")[0]
                    if host not in services and "prometheus" in services:
                        problem("deploy/compose/prometheus.yml", f"job {job['job_name']}: target {target} is no compose service")


# ── Kubernetes ─────────────────────────────────────────────────────────────────────────────────

def pod_spec(obj: dict) -> dict | None:
    kind = obj.get("kind")
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return obj["spec"]["template"]["spec"]
    return None


def check_k8s(versions: list[str], files: list[str]) -> None:
    import yaml
    from kubernetes_validate import utils as kv

    bins = set(dockerfile_bins())
    for f in files:
        name = Path(f).name
        docs = [d for d in yaml.safe_load_all(Path(f).read_text()) if d]
        if not docs:
            problem(name, "the build produced no manifests")
            continue
        by_kind: dict[str, dict[str, dict]] = {}
        for d in docs:
            by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        counted = {k: len(v) for k, v in sorted(by_kind.items())}
        print(f"[validate] {name}: {sum(counted.values())} manifests: " + ", ".join(f"{n} {k}" for k, n in counted.items()))

        # 1. Schemas: every built-in kind, strictly (unknown fields are errors), per version.
        for d in docs:
            ref = f"{name}: {d['kind']}/{d['metadata']['name']}"
            if d["kind"] in KEDA_KINDS:
                continue
            for v in versions:
                try:
                    kv.validate(d, v, strict=True)
                except kv.ValidationError as e:
                    path = ".".join(str(p) for p in e.path)
                    problem(ref, f"invalid for Kubernetes {e.version}: {path}: {e.message}")
                except kv.SchemaNotFoundError as e:
                    problem(ref, e.message)

        # 2. What lead2ledger relies on, across resources.
        secrets = by_kind.get("Secret", {})
        configmaps = by_kind.get("ConfigMap", {})
        deployments = by_kind.get("Deployment", {})
        for kind in ("Deployment", "Job"):
            for wname, w in by_kind.get(kind, {}).items():
                ref = f"{name}: {kind}/{wname}"
                spec = pod_spec(w)
                check_pod(ref, kind, spec, secrets, configmaps, bins)
        for dname, d in deployments.items():
            ref = f"{name}: Deployment/{dname}"
            if dname in WORK_QUEUES and "replicas" in d["spec"]:
                problem(ref, "sets replicas although KEDA scales it (apply would fight the autoscaler)")
        for pname, pdb in by_kind.get("PodDisruptionBudget", {}).items():
            if not matches_some(pdb["spec"]["selector"].get("matchLabels", {}), deployments):
                problem(f"{name}: PodDisruptionBudget/{pname}", "selects no Deployment's pods")
        for sname, svc in by_kind.get("Service", {}).items():
            if not matches_some(svc["spec"].get("selector", {}), deployments):
                problem(f"{name}: Service/{sname}", "selects no Deployment's pods")
        for iname, ing in by_kind.get("Ingress", {}).items():
            for rule in ing["spec"].get("rules", []):
                for p in rule.get("http", {}).get("paths", []):
                    backend = p["backend"]["service"]
                    svc = by_kind.get("Service", {}).get(backend["name"])
                    if not svc:
                        problem(f"{name}: Ingress/{iname}", f"backend Service {backend['name']} is not in the build")
                    elif backend["port"].get("name") not in {pp.get("name") for pp in svc["spec"]["ports"]}:
                        problem(f"{name}: Ingress/{iname}", f"Service {backend['name']} has no port {backend['port']}")
        check_keda(name, by_kind, deployments, secrets)


def matches_some(selector: dict, deployments: dict) -> bool:
    return bool(selector) and any(
        all(d["spec"]["template"]["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
        for d in deployments.values()
    )


def check_pod(ref: str, kind: str, spec: dict, secrets: dict, configmaps: dict, bins: set[str]) -> None:
    psc = spec.get("securityContext", {})
    if not psc.get("runAsNonRoot") or not psc.get("runAsUser"):
        problem(ref, "pod securityContext must set runAsNonRoot and a numeric runAsUser")
    if spec.get("automountServiceAccountToken") is not False:
        problem(ref, "mounts a service account token it does not need")
    if kind == "Deployment" and not spec.get("terminationGracePeriodSeconds"):
        problem(ref, "no terminationGracePeriodSeconds (the graceful drain)")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for v in volumes.values():
        if "configMap" in v and v["configMap"]["name"] not in configmaps:
            problem(ref, f"volume {v['name']}: ConfigMap {v['configMap']['name']} is not in the build")
        if "secret" in v:
            sec = secrets.get(v["secret"]["secretName"])
            if not sec:
                problem(ref, f"volume {v['name']}: Secret {v['secret']['secretName']} is not in the build")
            else:
                keys = set(sec.get("stringData", {})) | set(sec.get("data", {}))
                for item in v["secret"].get("items", []):
                    if item["key"] not in keys:
                        problem(ref, f"volume {v['name']}: Secret has no key {item['key']}")
    for c in spec["containers"]:
        cref = f"{ref} container {c['name']}"
        cmd = (c.get("command") or [None])[0]
        if cmd not in bins:
            problem(cref, f"runs `{cmd}`, which the image does not ship")
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
            problem(cref, "needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problem(cref, "must drop ALL capabilities")
        res = c.get("resources", {})
        if not res.get("requests") or not res.get("limits", {}).get("memory"):
            problem(cref, "needs resource requests and a memory limit")
        if kind == "Deployment":
            live = c.get("livenessProbe", {}).get("httpGet", {}).get("path")
            ready = c.get("readinessProbe", {}).get("httpGet", {}).get("path")
            if live != "/healthz" or ready != "/readyz":
                problem(cref, f"probes must be liveness /healthz and readiness /readyz (have {live}, {ready})")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        if "L2L_CONFIG" not in env:
            problem(cref, "no L2L_CONFIG")
        elif not any(env["L2L_CONFIG"].startswith(p + "/") and "configMap" in volumes.get(n, {}) for p, n in mounts.items()):
            problem(cref, f"L2L_CONFIG={env['L2L_CONFIG']} is not inside a mounted ConfigMap")
        for var, val in env.items():
            if not (var.startswith("L2L_") and var.endswith("_FILE")):
                continue
            ok = False
            for p, n in mounts.items():
                vol = volumes.get(n, {})
                if val and val.startswith(p + "/") and "secret" in vol:
                    key = val[len(p) + 1:]
                    items = vol["secret"].get("items")
                    ok = items is None or key in {i["path"] for i in items}
            if not ok:
                problem(cref, f"{var}={val} is not a file of a mounted Secret")


def config_namespace(configmaps: dict) -> str:
    """amqp.namespace of the lead2ledger TOML in the build's ConfigMap: queue names derive from it."""
    for cm in configmaps.values():
        text = cm.get("data", {}).get("lead2ledger.toml")
        if text is not None:
            return tomllib.loads(text).get("amqp", {}).get("namespace", "l2l")
    return "l2l"


def check_keda(name: str, by_kind: dict, deployments: dict, secrets: dict) -> None:
    namespace = config_namespace(by_kind.get("ConfigMap", {}))
    queues = {worker: [f"{namespace}.{q}" for q in QUEUES_OF[worker]] for worker in WORK_QUEUES}
    auths = by_kind.get("TriggerAuthentication", {})
    for aname, a in auths.items():
        ref = f"{name}: TriggerAuthentication/{aname}"
        if a.get("apiVersion") != "keda.sh/v1alpha1":
            problem(ref, f"apiVersion {a.get('apiVersion')}, expected keda.sh/v1alpha1")
        for t in a.get("spec", {}).get("secretTargetRef", []):
            sec = secrets.get(t.get("name"))
            if not sec:
                problem(ref, f"Secret {t.get('name')} is not in the build")
            elif t.get("key") not in set(sec.get("stringData", {})) | set(sec.get("data", {})):
                problem(ref, f"Secret {t.get('name')} has no key {t.get('key')}")
            if t.get("parameter") not in {"host"}:
                problem(ref, f"parameter {t.get('parameter')}: the rabbitmq scaler takes `host`")
    scaled = by_kind.get("ScaledObject", {})
    for worker in WORK_QUEUES:
        targets = [s for s in scaled.values() if s.get("spec", {}).get("scaleTargetRef", {}).get("name") == worker]
        if len(targets) != 1:
            problem(name, f"expected one ScaledObject for Deployment {worker}, found {len(targets)}")
    for sname, s in scaled.items():
        ref = f"{name}: ScaledObject/{sname}"
        spec = s.get("spec", {})
        allowed = {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod",
                   "idleReplicaCount", "initialCooldownPeriod", "advanced", "triggers", "fallback"}
        for k in spec:
            if k not in allowed:
                problem(ref, f"unknown field spec.{k}")
        if s.get("apiVersion") != "keda.sh/v1alpha1":
            problem(ref, f"apiVersion {s.get('apiVersion')}, expected keda.sh/v1alpha1")
        target = spec.get("scaleTargetRef", {}).get("name")
        if target not in deployments:
            problem(ref, f"scaleTargetRef {target} is not a Deployment in the build")
        lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi and hi >= 1):
            problem(ref, f"replica bounds {lo}..{hi} are not 0 <= min <= max, max >= 1")
        triggers = spec.get("triggers", [])
        if not triggers:
            problem(ref, "no triggers")
        for t in triggers:
            md = t.get("metadata", {})
            if t.get("type") != "rabbitmq":
                problem(ref, f"trigger type {t.get('type')}, expected rabbitmq")
                continue
            if md.get("queueName") not in queues.get(target, []):
                problem(ref, f"queueName {md.get('queueName')} is not one of {target}'s queues {queues.get(target)} "
                             f"(amqp.namespace {namespace!r} in the ConfigMap)")
            if md.get("mode") not in {"QueueLength", "MessageRate"}:
                problem(ref, f"mode {md.get('mode')}: QueueLength or MessageRate")
            if not isinstance(md.get("value"), str) or not md["value"].replace(".", "", 1).isdigit():
                problem(ref, "metadata.value must be a number in a string")
            if md.get("protocol") not in {"amqp", "http", "auto", None}:
                problem(ref, f"protocol {md.get('protocol')}: amqp, http or auto")
            auth = t.get("authenticationRef", {}).get("name")
            if auth not in auths:
                problem(ref, f"authenticationRef {auth} is not a TriggerAuthentication in the build")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    mode = argv[1]
    if mode == "static":
        check_image()
        check_toml()
        check_dashboard()
    elif mode == "compose":
        check_compose(argv[2:])
    elif mode == "k8s":
        check_k8s(argv[2].split(","), argv[3:])
    else:
        print(__doc__)
        return 2
    return finish(mode)


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main(sys.argv))
