"""The image recipe and the Kubernetes manifests, checked offline: no cluster, no container engine.

1. Every manifest validates against Kubernetes' own schemas (kubernetes-validate, strict: unknown fields are
   errors), at pinned Kubernetes versions.
2. deploy/kubernetes/kustomization.yaml lists every file beside it, and nothing else.
3. checkov finds no failed check in deploy/ and the Dockerfile; each skip is one of SKIPS below, with its
   reason written beside it in the manifest (``checkov.io/skipN: CKV_...=reason``).
4. What the manifests mean agrees with the code: probes on /livenessprobe and /health at the container port,
   a grace period longer than the drain, every ConfigMap variable a real meshkit key, secrets from Secrets,
   two monitors, a non-root numeric USER and `meshkit run` in the Dockerfile.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from meshkit.config import env_name, is_secret_key

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KUSTOMIZATION = KUBERNETES / "kustomization.yaml"
DOCKERFILE = REPO / "Dockerfile"
README = REPO / "README.md"

# The oldest Kubernetes these manifests are meant for (policy/v1 PDBs, Pod Security labels and seccomp fields
# are all older) and the newest schema kubernetes-validate 1.37 ships. Pinned: a new kubernetes-validate
# adds versions without changing what these tests check.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

# The checkov checks a manifest may skip (with `checkov.io/skipN: ID=reason` on the resource), and why.
# A skip of any other check fails test_checkov_skips_only_what_is_documented.
SKIPS = {
    "CKV_K8S_43": "the image is a placeholder (registry.example.com); pin the real one by digest in "
    "kustomization.yaml's images",
    "CKV_K8S_35": "meshkit reads mesh.api.key and mesh.monitor.secret from its configuration (the "
    "environment), it has no file source for them",
}
CHECKOV_VERSION_HINT = "make checkov (a venv of its own in .venv/checkov: checkov pins packaging<24)"


# -- loading --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Doc:
    path: Path
    index: int
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}#{self.index} {self.kind}/{self.name}"


def _load(path: Path) -> list[Doc]:
    bodies = [body for body in yaml.safe_load_all(path.read_text()) if body is not None]
    return [Doc(path, i, body) for i, body in enumerate(bodies)]


def _manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))


def _kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(KUSTOMIZATION.read_text())
    return loaded


def _resources() -> list[Doc]:
    """The Kubernetes objects `kubectl apply -k deploy/kubernetes` applies, in the kustomization's order."""
    return [doc for name in _kustomization()["resources"] for doc in _load(KUBERNETES / name)]


def _all_objects() -> list[Doc]:
    """Every Kubernetes object under deploy/ (the example Secret too), not the kustomization itself."""
    return [doc for path in _manifest_files() for doc in _load(path) if doc.kind != "Kustomization"]


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [doc.body for doc in _resources() if doc.kind == kind and doc.name == name]
    assert len(found) == 1, f"expected one {kind}/{name} in the kustomization, found {len(found)}"
    return found[0]


def _deployments() -> list[dict[str, Any]]:
    return [doc.body for doc in _resources() if doc.kind == "Deployment"]


def _containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for deployment in _deployments():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment["metadata"]["name"], container


def _config_map() -> dict[str, str]:
    data: dict[str, str] = _one("ConfigMap", "meshkit-config")["data"]
    return data


APPS = ("lambda-example", "rest-example")
MONITOR = "presence-monitor"


# -- 1. Kubernetes' schemas -----------------------------------------------------------------------------
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("doc", _all_objects(), ids=str)
def test_every_manifest_validates_against_the_kubernetes_schema(doc: Doc, version: str) -> None:
    kubernetes_validate.validate(doc.body, version, strict=True)


def test_strict_validation_rejects_an_unknown_field() -> None:
    """The control: a misspelt field (what strict mode is for) does not pass."""
    deployment = copy.deepcopy(_one("Deployment", MONITOR))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"httpGet": {"port": 8080}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


# -- 2. the kustomization lists every file, and only those --------------------------------------------------
def test_the_kustomization_lists_every_file_and_only_those() -> None:
    listed = _kustomization()["resources"]
    present = sorted(
        str(p.relative_to(KUBERNETES)) for p in KUBERNETES.rglob("*") if p.is_file() and p != KUSTOMIZATION
    )
    assert len(listed) == len(set(listed)), f"listed twice: {listed}"
    assert sorted(listed) == present


def test_the_namespace_comes_first_and_holds_everything() -> None:
    kustomization = _kustomization()
    namespace = kustomization["namespace"]
    resources = _resources()
    assert (resources[0].kind, resources[0].name) == ("Namespace", namespace)
    for doc in resources[1:]:
        assert doc.body["metadata"].get("namespace") == namespace, str(doc)


# -- 3. checkov -------------------------------------------------------------------------------------------
def _checkov_executable() -> str:
    for candidate in (
        os.environ.get("MESHKIT_CHECKOV"),
        str(Path(sys.prefix) / "checkov" / "bin" / "checkov"),
        str(REPO / ".venv" / "checkov" / "bin" / "checkov"),
        shutil.which("checkov"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail(f"checkov is not installed: {CHECKOV_VERSION_HINT}")


@pytest.fixture(scope="module")
def checkov() -> dict[str, dict[str, Any]]:
    """One checkov run over deploy/ and the Dockerfile, offline: its results by framework."""
    files = [str(DOCKERFILE), *(str(p) for p in _manifest_files())]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}  # no guideline download from the vendor's API
    command = [_checkov_executable(), "--framework", "kubernetes", "dockerfile", "--skip-download"]
    done = subprocess.run(
        [*command, "-o", "json", "-f", *files],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 1), f"checkov failed to run ({done.returncode}):\n{done.stderr[-3000:]}"
    reports = json.loads(done.stdout)
    return {report["check_type"]: report for report in (reports if isinstance(reports, list) else [reports])}


def test_checkov_scanned_every_manifest_and_the_dockerfile(checkov: dict[str, dict[str, Any]]) -> None:
    assert set(checkov) == {"kubernetes", "dockerfile"}
    for report in checkov.values():
        assert report["summary"]["parsing_errors"] == 0
        assert report["summary"]["passed"] > 0
    scanned = {check["resource"] for check in checkov["kubernetes"]["results"]["passed_checks"]}
    for deployment in (MONITOR, *APPS):
        assert f"Deployment.meshkit.{deployment}" in scanned


def test_checkov_finds_no_failed_check(checkov: dict[str, dict[str, Any]]) -> None:
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
        for report in checkov.values()
        for c in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)


def test_checkov_skips_only_what_is_documented(checkov: dict[str, dict[str, Any]]) -> None:
    for report in checkov.values():
        for check in report["results"]["skipped_checks"]:
            where = f"{check['check_id']} on {check['resource']} ({check['file_path']})"
            assert check["check_id"] in SKIPS, f"{where} is skipped, but not listed in SKIPS with a reason"
            reason = (check.get("check_result") or {}).get("suppress_comment") or ""
            assert len(reason) > 10 and reason != "No comment provided", f"{where}: no reason given"


# -- 4. what the manifests mean ------------------------------------------------------------------------------
def _container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number or a port name) as the container port it reaches."""
    for entry in container.get("ports", []):
        if port in (entry["containerPort"], entry.get("name")):
            return int(entry["containerPort"])
    raise AssertionError(f"port {port!r} is not a port of container {container['name']}")


def test_every_container_serves_on_server_port_and_apps_on_the_direct_port() -> None:
    server_port = int(_config_map()["SERVER_PORT"])
    direct_port = int(_config_map()["MESH_DIRECT_PORT"])
    for name, container in _containers():
        declared = [p["containerPort"] for p in container["ports"]]
        assert _container_port(container, "http") == server_port, name
        if name in APPS:  # the monitor takes no direct links
            assert _container_port(container, "mesh-direct") == direct_port, name
            assert declared == [server_port, direct_port], name
        else:
            assert declared == [server_port], name


def test_the_network_policy_opens_the_ports_the_apps_declare_between_meshkit_pods() -> None:
    internal = _one("NetworkPolicy", "meshkit-internal")["spec"]
    opened = {p["port"] for rule in internal["ingress"] for p in rule["ports"]}
    declared = {p["containerPort"] for _, container in _containers() for p in container["ports"]}
    assert opened == declared


@pytest.mark.parametrize("deployment", [MONITOR, *APPS])
def test_probes_point_at_the_health_endpoints_on_the_container_port(deployment: str) -> None:
    container = _one("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
    expected = {
        "livenessProbe": "/livenessprobe",
        "readinessProbe": "/health",
        "startupProbe": "/livenessprobe",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{deployment} {probe}"
        assert _container_port(container, get["port"]) == int(_config_map()["SERVER_PORT"])


# In a process of its own: importing the apps registers their functions, and the examples' routes would
# then clash in this process's default registry (as tests/test_examples.py says).
ROUTES = """
import importlib, json, sys
from fastapi.routing import APIRoute, APIWebSocketRoute
apps = {module: importlib.import_module(module).app for module in sys.argv[1:]}
print(json.dumps({
    module: {
        "http": sorted(r.path for r in app.routes if isinstance(r, APIRoute)),
        "websocket": sorted(r.path for r in app.routes if isinstance(r, APIWebSocketRoute)),
    }
    for module, app in apps.items()
}))
"""


def test_the_health_endpoints_exist_in_the_apps_and_the_monitor() -> None:
    """The probes' paths and the monitor's websocket are what the code serves (FastAPI's route table)."""
    modules = [_app_module(name) for name in (MONITOR, *APPS)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", ROUTES, *modules],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    routes = json.loads(done.stdout.strip().splitlines()[-1])
    for module in modules:
        assert {"/health", "/livenessprobe"} <= set(routes[module]["http"]), module
    assert "/ws/presence/{origin}" in routes["presence_server.main"]["websocket"]


def _app_module(deployment: str) -> str:
    container = _one("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
    return str(container["args"][0]).partition(":")[0]


@pytest.mark.parametrize("deployment", [MONITOR, *APPS])
def test_each_deployment_runs_an_app_that_exists(deployment: str) -> None:
    container = _one("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
    module, sep, attribute = str(container["args"][0]).partition(":")
    assert sep and attribute == "app", container["args"]
    assert importlib.util.find_spec(module) is not None, module
    assert "command" not in container, "the image's ENTRYPOINT (meshkit run) must stay"


def _drain_timeout() -> float:
    from meshkit.core._drain import DEFAULT_DRAIN_TIMEOUT

    return float(_config_map().get(env_name("drain.timeout"), DEFAULT_DRAIN_TIMEOUT))


def _pre_stop_seconds(container: dict[str, Any]) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0.0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    return float(command[1])


@pytest.mark.parametrize("deployment", [MONITOR, *APPS])
def test_the_grace_period_outlasts_the_drain(deployment: str) -> None:
    pod = _one("Deployment", deployment)["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    pre_stop = _pre_stop_seconds(pod["containers"][0])
    # the drain starts after preStop; leaving the mesh and closing need a few seconds more
    assert grace >= pre_stop + _drain_timeout() + 5, (grace, pre_stop, _drain_timeout())
    if deployment in APPS:
        assert pre_stop >= 3, "an app reached through its Service waits for the endpoints to catch up"


def _known_keys() -> set[str]:
    """The config keys meshkit reads: its accessor calls in the code, the application.properties files,
    and the keys of the README's Configuration and Connectors tables."""
    keys: set[str] = set()
    call = re.compile(r"""\.get(?:_int|_float|_bool|_list)?\(\s*["']([a-z][a-z0-9_.-]*)["']""")
    for package in ("meshkit", "presence_server", "example_services"):
        for source in (REPO / package).rglob("*.py"):
            keys.update(call.findall(source.read_text()))
        for properties in (REPO / package).rglob("application.properties"):
            for line in properties.read_text().splitlines():
                if line.strip() and not line.lstrip().startswith(("#", "!")):
                    keys.add(re.split(r"[=:]", line, maxsplit=1)[0].strip())
    text = README.read_text()
    for section in ("## Configuration", "## Connectors"):
        body = text.split(section, 1)[1].split("\n## ", 1)[0]
        for row in (line for line in body.splitlines() if line.startswith("|")):
            keys.update(k for k in re.findall(r"`([a-z][a-z0-9_.-]*)`", row) if "." in k)
    return keys


def test_every_configmap_variable_is_a_meshkit_key() -> None:
    by_variable = {env_name(key): key for key in _known_keys()}
    unknown = sorted(set(_config_map()) - set(by_variable))
    assert not unknown, f"not the variable of any meshkit config key (key -> KEY_NAME): {unknown}"
    for variable, value in _config_map().items():
        assert isinstance(value, str), f"{variable}: a ConfigMap value is a string"
        assert not is_secret_key(by_variable[variable]), f"{variable} is a secret: it belongs in a Secret"


def test_the_configuration_says_what_the_mesh_needs() -> None:
    config = _config_map()
    assert config["CLOUD_CONNECTOR"] == "kafka"
    monitor_service = _one("Service", MONITOR)
    port = monitor_service["spec"]["ports"][0]["port"]
    assert config["PRESENCE_URL"] == f"ws://{MONITOR}:{port}/ws/presence"
    lambda_port = _one("Service", "lambda-example")["spec"]["ports"][0]["port"]
    assert config["LAMBDA_EXAMPLE_ENDPOINT"] == f"http://lambda-example:{lambda_port}/api/event"


def test_the_broker_address_is_one_setting() -> None:
    text = "\n".join(KUBERNETES.joinpath(name).read_text() for name in _kustomization()["resources"])
    broker = _config_map()[env_name("bootstrap.servers")]
    assert broker and text.count(broker) == 1
    assert text.count(f"{env_name('bootstrap.servers')}:") == 1
    for name, container in _containers():
        assert all(not e["name"].startswith("BOOTSTRAP") for e in container.get("env", [])), name
        assert {"configMapRef": {"name": "meshkit-config"}} in container["envFrom"], name


def test_the_monitor_runs_two_replicas_and_keeps_one_in_a_disruption() -> None:
    monitor = _one("Deployment", MONITOR)
    assert monitor["spec"]["replicas"] == 2
    budget = _one("PodDisruptionBudget", MONITOR)["spec"]
    assert budget["minAvailable"] == 1
    labels = monitor["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()


def test_services_select_their_pods_and_reach_the_container_port() -> None:
    for deployment in (MONITOR, *APPS):
        pod = _one("Deployment", deployment)["spec"]["template"]
        service = _one("Service", deployment)["spec"]
        assert service["selector"].items() <= pod["metadata"]["labels"].items(), deployment
        for port in service["ports"]:
            _container_port(pod["spec"]["containers"][0], port["targetPort"])


def _secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_secrets_come_from_secrets() -> None:
    example = {doc.name: doc.body for doc in _load(DEPLOY / "secrets.example.yaml")}
    assert not [doc for doc in _resources() if doc.kind == "Secret"], "no placeholder Secret in apply -k"
    for name, container in _containers():
        refs = _secret_refs(container)
        for entry in container.get("env", []):
            if is_secret_key(entry["name"]):
                assert entry["name"] in refs, f"{name}: {entry['name']} must come from a secretKeyRef"
        assert all("value" not in e for e in container.get("env", []) if is_secret_key(e["name"])), name
        assert refs.get(env_name("mesh.api.key")) == ("meshkit-mesh-key", "MESH_API_KEY"), name
        has_monitor_secret = env_name("mesh.monitor.secret") in refs
        assert has_monitor_secret == (name == MONITOR), f"{name}: only the monitors hold mesh.monitor.secret"
        for secret, key in refs.values():
            assert key in example[secret]["stringData"], f"{secret}/{key} is not in secrets.example.yaml"
        for source in container.get("envFrom", []):
            assert set(source) <= {"configMapRef", "secretRef"}, name
    for secret in example.values():
        assert all("REPLACE-ME" in value for value in secret["stringData"].values()), "placeholders only"


def test_every_pod_runs_hardened() -> None:
    uid = _dockerfile_uid()
    for deployment in _deployments():
        pod = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == uid, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        tmp = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] == uid, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in tmp, f"{name}: /tmp is an emptyDir on a read-only root"


def test_every_image_is_the_placeholder_the_kustomization_sets() -> None:
    images = {entry["name"]: entry for entry in _kustomization()["images"]}
    for name, container in _containers():
        image, _, tag = container["image"].rpartition(":")
        assert image in images and tag == images[image]["newTag"], f"{name}: {container['image']}"
        assert image.startswith("registry.example.com/"), "a placeholder registry, clearly one"


# -- the Dockerfile ------------------------------------------------------------------------------------
def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = (line.strip() for line in text.splitlines())
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.split(None, 1) for line in lines if line and not line.startswith("#"))
    ]


def _dockerfile_uid() -> int:
    users = [args for op, args in _instructions() if op == "USER"]
    assert users, "the Dockerfile sets no USER: it would run as root"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1].strip())
    assert match, f"USER {users[-1]!r} is not numeric (runAsNonRoot cannot verify a name)"
    uid = int(match.group(1))
    assert uid != 0 and (match.group(2) is None or int(match.group(2)) != 0)
    return uid


def test_the_dockerfile_is_multi_stage_with_a_numeric_non_root_user() -> None:
    instructions = _instructions()
    stages = [args for op, args in instructions if op == "FROM"]
    assert len(stages) >= 2 and any("--from=build" in args for op, args in instructions if op == "COPY")
    assert _dockerfile_uid() >= 10000  # above the host's users (checkov CKV_K8S_40 asks the same)
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    last_user = max(i for i, (op, _) in enumerate(instructions) if op == "USER")
    assert last_user > last_from, "USER is set in the runtime stage"


def test_the_dockerfile_entrypoint_runs_meshkit_on_server_port() -> None:
    instructions = dict(_instructions())  # the last of each
    entrypoint = json.loads(instructions["ENTRYPOINT"])
    assert any(re.search(r"\bexec meshkit run\b", part) for part in entrypoint) or entrypoint[:2] == [
        "meshkit",
        "run",
    ], entrypoint
    assert "--host 0.0.0.0" in " ".join(entrypoint)
    server_port = re.search(r"\bSERVER_PORT=(\d+)", instructions["ENV"])
    assert server_port is not None and server_port.group(1) == _config_map()["SERVER_PORT"]
    assert instructions["EXPOSE"] == _config_map()["SERVER_PORT"]
    assert "/livenessprobe" in instructions["HEALTHCHECK"]
    assert re.search(r"ARG APP=presence_server\.main:app", DOCKERFILE.read_text())


def test_the_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allow list: everything else (.venv, .git, caches) stays out"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for op, args in _instructions():
        if op == "COPY" and "--from=" not in args:
            for source in args.split()[:-1]:
                assert source in allowed, f"COPY {source}: not let in by .dockerignore"
                assert (REPO / source).exists(), source


def test_the_readme_says_how_to_deploy() -> None:
    text = README.read_text()
    section = text.split("## Deploying", 1)[1].split("\n## ", 1)[0]
    for needed in ("docker build", "--build-arg APP=", "docker push", "kubectl apply -k deploy/kubernetes"):
        assert needed in section, needed
    assert "no container engine" in section
