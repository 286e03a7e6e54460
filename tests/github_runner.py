"""Run a GitHub Actions job here, from its workflow file, the way a hosted runner would.

No Actions runner can be installed on this machine (nektos/act downloads its
binary), so this reproduces one: the job's steps run on the host in a clean
clone of the repository, as on an `ubuntu-latest` runner, with the job's
service containers started from what the workflow declares (image, env, ports,
options, a network alias per service) and waited for until Docker reports
them healthy, as the runner does before the first step.

What the workflow says is read from the file itself, so the tests cannot drift
from it. Only what the workflows of this template use is understood: `run:`
steps with their shell, env and working directory; the status functions in
`if:`; a few `${{ }}` contexts; and the `uses:` actions listed in ACTIONS,
each replaced by what it provides. Anything else raises NotReproducible rather
than being skipped, so a new step cannot pass here without being run.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class NotReproducible(Exception):
    """The workflow uses something this reproduction does not know how to run."""


@dataclass
class StepResult:
    name: str
    returncode: int
    output: str
    skipped: bool = False
    command: str = ""


@dataclass
class JobRun:
    steps: list[StepResult] = field(default_factory=list)
    # The steps left unrun because they need what cannot exist here, with why.
    not_run: list[tuple[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> list[StepResult]:
        return [step for step in self.steps if step.returncode != 0]

    def step(self, pattern: str) -> StepResult:
        """The one step whose name or command matches `pattern`."""
        [found] = [s for s in self.steps if re.search(pattern, f"{s.name}\n{s.command}")]
        return found

    def report(self) -> str:
        lines = []
        for step in self.steps:
            state = "skipped" if step.skipped else f"exit {step.returncode}"
            lines.append(f"--- {step.name}: {state}")
            if step.returncode != 0:
                lines.append(step.output[-6000:])
        lines += [f"--- not run: {name}: {why}" for name, why in self.not_run]
        return "\n".join(lines)


# The variables a hosted runner has that matter to the steps; nothing else of
# the calling process (the template's own virtual environment, pytest-cov's
# subprocess hooks) reaches the job.
PASSED_THROUGH = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "SSL_CERT_FILE",
    "DOCKER_HOST",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "UV_CACHE_DIR",
)

# How a step's `shell:` runs its script on Linux (GitHub's documented defaults).
SHELLS = {
    None: ["bash", "-e"],
    "bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail"],
    "sh": ["sh", "-e"],
}


def load_job(workflow: Path, job: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The workflow document and one of its jobs."""
    document: dict[str, Any] = yaml.safe_load(workflow.read_text())
    return document, document["jobs"][job]


def clean_checkout(project: Path, destination: Path) -> Path:
    """What actions/checkout gives a first push: the committed files only.

    Git-ignored files (the `.env` a bake writes, caches) are not in the clone.
    """
    if not (project / ".git").exists():
        git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.com"]
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=project, check=True)
        subprocess.run(["git", "add", "-A"], cwd=project, check=True)
        subprocess.run([*git, "commit", "-q", "-m", "First push"], cwd=project, check=True)
    subprocess.run(
        ["git", "clone", "-q", str(project), str(destination)], check=True, capture_output=True
    )
    return destination


def evaluate(text: str, contexts: Mapping[str, Any]) -> str:
    """Replace each `${{ name.path }}` with its value; other expressions are refused."""

    def value(match: re.Match[str]) -> str:
        expression = match[1].strip()
        current: Any = contexts
        for part in expression.split("."):
            if not isinstance(current, Mapping) or part not in current:
                raise NotReproducible(f"expression ${{{{ {expression} }}}}")
            current = current[part]
        if isinstance(current, bool):
            return "true" if current else "false"
        return str(current)

    return re.sub(r"\$\{\{(.*?)\}\}", value, text)


def should_run(condition: object, failed: bool, contexts: Mapping[str, Any]) -> bool:
    """A step's `if:`; without one a step runs only while every earlier one succeeded."""
    if condition is None:
        return not failed
    text = str(condition).strip()
    text = re.sub(r"^\$\{\{(.*)\}\}$", r"\1", text).strip()
    status = {
        "success()": not failed,
        "failure()": failed,
        "always()": True,
        "!cancelled()": True,
        "cancelled()": False,
    }
    if text in status:
        return status[text]
    # A plain context value, such as `matrix.postgres`.
    if re.fullmatch(r"[A-Za-z_][\w.-]*", text):
        return evaluate(f"${{{{ {text} }}}}", contexts) == "true" and not failed
    # A context value compared with a string, such as `github.event_name == 'schedule'`.
    compared = re.fullmatch(r"([A-Za-z_][\w.-]*)\s*==\s*'([^']*)'", text)
    if compared:
        return evaluate(f"${{{{ {compared[1]} }}}}", contexts) == compared[2] and not failed
    raise NotReproducible(f"if: {condition}")


@contextmanager
def port_locks(ports: list[int]) -> Iterator[None]:
    """Host ports are the runner's own; tests that reproduce jobs take turns for them."""
    with ExitStack() as stack:
        for port in sorted(set(ports)):
            path = Path(tempfile.gettempdir()) / f"fastapi-docker-host-port-{port}.lock"
            handle = stack.enter_context(path.open("a"))
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def published_ports(services: Mapping[str, Any]) -> list[int]:
    ports = []
    for service in services.values():
        for mapping in service.get("ports", []):
            host = str(mapping).split(":")[0]
            ports.append(int(host))
    return ports


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()}")
    return result


@contextmanager
def service_containers(services: Mapping[str, Any], timeout: float = 180) -> Iterator[None]:
    """Start the job's services on a network of their own, wait until healthy, remove after."""
    network = f"github_network_{uuid.uuid4().hex[:12]}"
    docker("network", "create", network)
    names = []
    try:
        for alias, service in services.items():
            name = f"{alias}-{uuid.uuid4().hex[:8]}"
            command = ["create", "--name", name, "--network", network, "--network-alias", alias]
            for key, value in (service.get("env") or {}).items():
                command += ["-e", f"{key}={value}"]
            for mapping in service.get("ports", []):
                command += ["-p", str(mapping)]
            command += shlex.split(service.get("options", ""))
            if "credentials" in service or "volumes" in service:
                raise NotReproducible(f"service {alias}: credentials or volumes")
            docker(*command, service["image"])
            names.append(name)
            docker("start", name)
        deadline = time.monotonic() + timeout
        for name in names:
            while True:
                state = docker(
                    "inspect",
                    "--format",
                    "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
                    name,
                ).stdout.strip()
                if state in {"healthy", "none"}:
                    break
                if state == "unhealthy" or time.monotonic() > deadline:
                    logs = docker("logs", "--tail", "50", name, check=False)
                    raise RuntimeError(f"service {name} is {state}:\n{logs.stdout}{logs.stderr}")
                time.sleep(1)
        yield
    finally:
        for name in names:
            docker("rm", "--force", "--volumes", name, check=False)
        docker("network", "rm", network, check=False)


class Runner:
    """The state of one job: its workspace, environment and PATH."""

    def __init__(self, workspace: Path, temp: Path, env: Mapping[str, str]) -> None:
        self.workspace = workspace
        self.temp = temp
        self.bin = temp / "_tool_bin"
        self.bin.mkdir(parents=True)
        files = {name: temp / f"_{name}" for name in ("env", "path", "output", "summary")}
        for path in files.values():
            path.touch()
        self.files = files
        base = {key: os.environ[key] for key in PASSED_THROUGH if key in os.environ}
        base["PATH"] = f"{self.bin}:{base.get('PATH', '/usr/bin:/bin')}"
        self.env = {
            **base,
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "RUNNER_OS": "Linux",
            "RUNNER_TEMP": str(temp),
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_ENV": str(files["env"]),
            "GITHUB_PATH": str(files["path"]),
            "GITHUB_OUTPUT": str(files["output"]),
            "GITHUB_STEP_SUMMARY": str(files["summary"]),
            **env,
        }

    def read_command_files(self) -> None:
        """What a step appended to $GITHUB_ENV and $GITHUB_PATH holds for the next steps."""
        for line in self.files["env"].read_text().splitlines():
            if "=" in line and "<<" not in line:
                key, value = line.split("=", 1)
                self.env[key] = value
        for line in reversed(self.files["path"].read_text().splitlines()):
            if line.strip():
                self.env["PATH"] = f"{line.strip()}:{self.env['PATH']}"
        self.files["env"].write_text("")
        self.files["path"].write_text("")

    def link(self, executable: str, name: str) -> None:
        target = self.bin / name
        target.unlink(missing_ok=True)
        target.symlink_to(executable)


def setup_uv(runner: Runner, inputs: Mapping[str, Any]) -> None:
    """astral-sh/setup-uv: the requested uv on PATH, UV_PYTHON set to python-version."""
    wanted = str(inputs.get("version", ""))
    found = shutil.which("uv")
    if found is None:
        raise NotReproducible("setup-uv: no uv on this machine")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True)
    have = version.stdout.split()[1]
    if wanted and wanted != have:
        raise NotReproducible(f"setup-uv asks for uv {wanted}; this machine has {have}")
    runner.link(found, "uv")
    uvx = Path(found).with_name("uvx")
    if uvx.exists():
        runner.link(str(uvx), "uvx")
    if "python-version" in inputs:
        runner.env["UV_PYTHON"] = str(inputs["python-version"])


def setup_python(runner: Runner, inputs: Mapping[str, Any]) -> None:
    """actions/setup-python: `python` and `pip` of that version, installing into a place
    of the job's own (a virtual environment here, the tool cache on a runner)."""
    version = str(inputs["python-version"])
    interpreter = shutil.which(f"python{version}")
    if interpreter is None:
        raise NotReproducible(f"setup-python: no python{version} on this machine")
    venv = runner.temp / "_python"
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True)
    runner.env["PATH"] = f"{venv / 'bin'}:{runner.env['PATH']}"


def checkout(runner: Runner, inputs: Mapping[str, Any]) -> None:
    """actions/checkout: the clean clone is made before the first step."""
    if inputs.get("persist-credentials") is not False:
        raise NotReproducible("checkout that leaves a token in .git/config")


ACTIONS: dict[str, Callable[[Runner, Mapping[str, Any]], None]] = {
    "actions/checkout": checkout,
    "astral-sh/setup-uv": setup_uv,
    "actions/setup-python": setup_python,
}

# Actions that need what this machine cannot have, with the reason; a job stops
# at the first of them, and the steps from there on are listed as not run.
UNREPRODUCIBLE = {
    "helm/kind-action": "a kind cluster needs the kindest/node image from a container registry",
}


def run_job(
    project: Path,
    workflow: Path,
    job: str,
    workdir: Path,
    matrix: Mapping[str, Any] | None = None,
    host_ports: Sequence[int] = (),
    event: str = "push",
    github: Mapping[str, Any] | None = None,
) -> JobRun:
    """Run `job` of `workflow` (a path inside `project`) in a clean checkout of `project`.

    `host_ports`: ports the steps themselves publish (a compose stack), held like the
    services' own for the length of the job. `event`: what triggered the run
    (`github.event_name`); `github`: more of the github context (token, event payload).
    """
    document, spec = load_job(workflow, job)
    workspace = clean_checkout(project, workdir / "workspace")
    temp = workdir / "runner-temp"
    temp.mkdir()
    contexts: dict[str, Any] = {
        "matrix": dict(matrix or {}),
        "runner": {"temp": str(temp), "os": "Linux"},
        "github": {**(github or {}), "workspace": str(workspace), "event_name": event},
    }
    env = {
        key: evaluate(str(value), contexts)
        for scope in (document.get("env") or {}, spec.get("env") or {})
        for key, value in scope.items()
    }
    runner = Runner(workspace, temp, {"GITHUB_EVENT_NAME": event, **env})
    services: dict[str, Any] = spec.get("services") or {}
    budget = float(spec.get("timeout-minutes", 360)) * 60
    started = time.monotonic()
    result = JobRun()
    with port_locks([*published_ports(services), *host_ports]), service_containers(services):
        failed = False
        for index, step in enumerate(spec["steps"]):
            name = str(step.get("name") or step.get("run") or step.get("uses"))
            uses = str(step.get("uses", "")).split("@")[0]
            if uses in UNREPRODUCIBLE:
                result.not_run += [
                    (str(s.get("name") or s.get("run") or s.get("uses")), UNREPRODUCIBLE[uses])
                    for s in spec["steps"][index:]
                ]
                break
            if not should_run(step.get("if"), failed, contexts):
                result.steps.append(StepResult(name, 0, "", skipped=True))
                continue
            inputs = {
                k: evaluate(str(v), contexts) if isinstance(v, str) else v
                for k, v in (step.get("with") or {}).items()
            }
            if uses:
                if uses not in ACTIONS:
                    raise NotReproducible(f"action {uses}")
                ACTIONS[uses](runner, inputs)
                result.steps.append(StepResult(name, 0, ""))
                continue
            outcome = run_step(runner, step, contexts, budget - (time.monotonic() - started))
            result.steps.append(
                StepResult(name, outcome.returncode, outcome.stdout, command=str(step["run"]))
            )
            failed = failed or outcome.returncode != 0
            runner.read_command_files()
    return result


def run_step(
    runner: Runner, step: Mapping[str, Any], contexts: Mapping[str, Any], left: float
) -> subprocess.CompletedProcess[str]:
    shell = step.get("shell")
    if shell not in SHELLS:
        raise NotReproducible(f"shell: {shell}")
    script = runner.temp / f"step-{uuid.uuid4().hex[:8]}.sh"
    script.write_text(evaluate(str(step["run"]), contexts))
    env = {
        **runner.env,
        **{k: evaluate(str(v), contexts) for k, v in (step.get("env") or {}).items()},
    }
    cwd = runner.workspace / evaluate(str(step.get("working-directory", ".")), contexts)
    timeout = min(left, float(step.get("timeout-minutes", 360)) * 60)
    try:
        return subprocess.run(
            [*SHELLS[shell], str(script)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout if isinstance(expired.stdout, str) else ""
        return subprocess.CompletedProcess(expired.cmd, 124, output + "\n(timed out)")


if __name__ == "__main__":  # pragma: no cover - by hand: python -m tests.github_runner DIR FILE JOB
    outcome = run_job(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(tempfile.mkdtemp()))
    print(outcome.report())
    sys.exit(1 if outcome.failed else 0)
