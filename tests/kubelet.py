"""Run a rendered pod spec's container under Docker the way a kubelet would.

What a kubelet does with a container spec, translated to `docker run`:
command and args (command replaces the image's ENTRYPOINT, args its CMD; a
command without args drops the CMD), $(VAR) expansion in both, env and envFrom
with ConfigMap and Secret values resolved, the pod's and container's security
context (user, group, fsGroup, read-only root, dropped capabilities, no new
privileges; Docker's default seccomp profile is the RuntimeDefault), the
memory and CPU limits, and emptyDir volumes as tmpfs of their size limit.
Anything in the spec this module does not understand fails the test, so a new
field cannot be silently ignored.
"""

from __future__ import annotations

import base64
import re
import subprocess
import time
from collections.abc import Mapping
from typing import Any

import httpx

QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G|m)?$")
FACTORS = {
    None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9,
}  # fmt: skip
UNDERSTOOD_CONTAINER_FIELDS = {
    "name", "image", "imagePullPolicy", "command", "args", "env", "envFrom", "ports",
    "resources", "securityContext", "volumeMounts", "startupProbe", "readinessProbe",
    "livenessProbe", "lifecycle",
}  # fmt: skip


def quantity_bytes(value: str) -> int:
    match = QUANTITY.match(value)
    assert match is not None and match.group(2) != "m", f"not a byte quantity: {value}"
    return int(float(match.group(1)) * FACTORS[match.group(2)])


def cpus(value: str) -> str:
    return str(int(value[:-1]) / 1000) if value.endswith("m") else value


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: $$ escapes; an unknown $(NAME) stays as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env.get(name, f"$({name})"))
                    i = end + 1
                    continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def object_data(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
    return dict(obj.get("data", {}))


def resolve_env(container: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, str]:
    """envFrom first, then env in order (each may use $(VAR) of the ones before)."""
    by_name = {(o["kind"], o["metadata"]["name"]): object_data(o) for o in objects}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if field in source:
                env.update(by_name[(kind, source[field]["name"])])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
            continue
        source = item["valueFrom"]
        field, kind = next(
            (f, k)
            for f, k in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap"))
            if f in source
        )
        ref = source[field]
        data = by_name.get((kind, ref["name"]), {})
        if ref["key"] not in data and ref.get("optional"):
            continue  # the kubelet leaves an optional variable unset
        env[item["name"]] = data[ref["key"]]
    return env


def docker_run_command(
    pod: dict[str, Any],
    container: dict[str, Any],
    objects: list[dict[str, Any]],
    *,
    name: str,
    network: str,
    image: str,
    publish: bool = False,
) -> list[str]:
    """The `docker run` that starts `container` of pod spec `pod` as a kubelet would."""
    unknown = set(container) - UNDERSTOOD_CONTAINER_FIELDS
    assert not unknown, f"the Docker kubelet does not implement {unknown}"
    pod_context = pod.get("securityContext", {})
    context = {**pod_context, **container.get("securityContext", {})}
    args = ["docker", "run", "--detach", "--name", name, "--network", network]
    user, group = context.get("runAsUser"), context.get("runAsGroup")
    if context.get("runAsNonRoot"):
        # The kubelet refuses to start a container it cannot prove non-root.
        assert isinstance(user, int) and user > 0, (
            f"{container['name']}: runAsNonRoot without a uid"
        )
    if user is not None:
        args += ["--user", f"{user}:{group}" if group is not None else str(user)]
    if "fsGroup" in pod_context:
        args += ["--group-add", str(pod_context["fsGroup"])]
    if context.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    for cap in context.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    if context.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges:true"]
    assert context.get("privileged") in (None, False)
    seccomp = context.get("seccompProfile", {}).get("type")
    assert seccomp in (None, "RuntimeDefault"), (
        seccomp
    )  # Docker's default profile is the runtime default
    limits = container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        args += [
            "--memory",
            str(quantity_bytes(limits["memory"])),
            "--memory-swap",
            str(quantity_bytes(limits["memory"])),
        ]
    if "cpu" in limits:
        args += ["--cpus", cpus(str(limits["cpu"]))]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        assert set(volume) == {"name", "emptyDir"}, f"only emptyDir volumes are emulated: {volume}"
        size = volume["emptyDir"].get("sizeLimit")
        options = "rw,exec,nosuid,nodev,mode=1777" + (
            f",size={quantity_bytes(size)}" if size else ""
        )
        args += ["--tmpfs", f"{mount['mountPath']}:{options}"]
    env = resolve_env(container, objects)
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    if publish:
        for port in container.get("ports", []):
            args += ["--publish", f"127.0.0.1::{port['containerPort']}"]
    command = [expand(part, env) for part in container.get("command", [])]
    arguments = [expand(part, env) for part in container.get("args", [])]
    if command:
        args += ["--entrypoint", command[0], image, *command[1:], *arguments]
    else:
        args += [image, *arguments]
    return args


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args[:3])} exited {result.returncode}: {result.stderr[-2000:]}"
        )
    return result


def published_port(container: str, port: int) -> int:
    return int(docker("port", container, str(port)).stdout.split()[0].rsplit(":", 1)[1])


def http_probe(probe: dict[str, Any], ports: dict[str, int], host_port: dict[int, int]) -> bool:
    """One probe attempt, with the probe's own timeout; any answer 200-399 passes."""
    get = probe["httpGet"]
    port = get["port"] if isinstance(get["port"], int) else ports[get["port"]]
    try:
        response = httpx.get(
            f"http://127.0.0.1:{host_port[port]}{get['path']}",
            timeout=probe.get("timeoutSeconds", 1),
        )
    except httpx.HTTPError:
        return False
    return 200 <= response.status_code < 400


def exec_probe(probe: dict[str, Any], container: str) -> bool:
    try:
        result = docker(
            "exec",
            container,
            *probe["exec"]["command"],
            check=False,
            timeout=probe.get("timeoutSeconds", 1) + 5,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def run_probe(probe: dict[str, Any], attempt: Any) -> int:
    """Poll like the kubelet: every periodSeconds after initialDelaySeconds,
    until successThreshold successes in a row; fail after failureThreshold
    failures in a row. Returns the attempts it took."""
    time.sleep(probe.get("initialDelaySeconds", 0))
    failures = successes = attempts = 0
    while True:
        attempts += 1
        started = time.monotonic()
        if attempt(probe):
            successes, failures = successes + 1, 0
            if successes >= probe.get("successThreshold", 1):
                return attempts
        else:
            successes, failures = 0, failures + 1
            if failures >= probe.get("failureThreshold", 3):
                raise AssertionError(f"probe failed {failures} times in a row: {probe}")
        time.sleep(max(0.0, probe.get("periodSeconds", 10) - (time.monotonic() - started)))
