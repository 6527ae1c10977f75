"""The embedded appliance in one process tree (``make run``): the control plane (uvicorn), a local
node agent that runs the demo model on the CPU build of vLLM, and the periodic jobs that
celery beat runs in production."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from appliance.access.demo import DEMO_APPLICATION, demo_application_key
from appliance.access.models import Application
from appliance.accounts.break_glass import break_glass_expire
from appliance.agent.config import write_private
from appliance.audit.checkpoints import checkpoint_create
from appliance.audit.witness import witness_forward
from appliance.core.actors import system_actor
from appliance.core.errors import DomainError
from appliance.fleet import deployments, services
from appliance.fleet.choices import Device, NodeStatus
from appliance.fleet.models import Deployment, Node
from appliance.fleet.telemetry import gpu_samples_rollup
from appliance.gateway.usage import usage_rollup
from appliance.registry.choices import EntryStatus
from appliance.registry.models import Adapter, BaseModel
from appliance.routing.costs import cost_refresh
from appliance.routing.demo import demo_route_install
from appliance.routing.evaluation_runs import evaluations_sweep

LOCAL_NODE = "local"
DEMO_DEPLOYMENT = "demo-llama"
EMBEDDING_DEPLOYMENT = "minilm"
ROLLUP_EVERY_SECONDS = 60


def agent_command(state_dir: Path, *args: str) -> list[str]:
    """``appliance-agent`` with the local agent's state directory."""
    return [sys.executable, "-m", "appliance.agent.cli", "--state-dir", str(state_dir), *args]


class Command(BaseCommand):
    help = "Run the control plane, a local agent with the demo model, and the periodic jobs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--engine-python",
            default=os.environ.get("APPLIANCE_ENGINE_PYTHON", ""),
            help="a Python with vLLM (the CPU build for the demo); none: no local engine",
        )
        parser.add_argument("--agent-state-dir", default=str(settings.VAR_DIR / "agent"))

    def handle(self, *args: Any, **options: Any) -> None:
        url = f"http://{options['host']}:{options['port']}"
        state_dir = Path(options["agent_state_dir"])
        engine_python = options["engine_python"]
        if engine_python and not Path(engine_python).exists():
            raise CommandError(f"{engine_python} does not exist (run `make engine`?)")
        call_command("make_demo_model", engine_python=engine_python)
        self._demo_key(url)
        self._demo_route()
        children: list[subprocess.Popen[bytes]] = []
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            children.append(self._serve(options["host"], options["port"]))
            self._wait_until_up(url, children[0])
            if engine_python:
                self._enroll(url, state_dir)
                self._deploy_demo()
                children.append(self._agent(state_dir, engine_python))
                self.stdout.write(
                    f"Local agent started; the demo model '{DEMO_DEPLOYMENT}' is starting on the "
                    "CPU (about a minute). Watch it: GET /api/v1/deployments"
                )
            else:
                self.stdout.write("No engine Python given: control plane only, no local engine.")
            self.stdout.write(
                self.style.SUCCESS(
                    f"Serving on {url}  (console: {url}/console/, API docs: {url}/api/v1/docs)"
                )
            )
            self._periodic(children, lambda: stopping)
        finally:
            for child in reversed(children):  # the agent first, so it stops its engines
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
                    try:
                        child.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        child.kill()

    def _demo_key(self, url: str) -> None:
        """Add the demo application's key and the gateway's URL to the credentials file."""
        path = settings.VAR_DIR / "demo-credentials.json"
        saved = json.loads(path.read_text()) if path.exists() else {}
        key = demo_application_key(known_key=saved.get("api_key", ""))
        if key is None:
            return
        if key != saved.get("api_key"):
            saved.update(api_key=key, base_url=f"{url}/v1")
            write_private(path, saved)
            self.stdout.write(f"Demo application key for {url}/v1 saved to {path} (mode 0600)")

    def _demo_route(self) -> None:
        """The route ``auto`` over the demo model and its triage adapter (with the embedding
        model's semantic classifier where it is imported), granted to the demo application."""
        application = Application.objects.filter(name=DEMO_APPLICATION).first()
        if application is None:
            return
        route = demo_route_install(
            actor=system_actor("run_appliance"),
            application=application,
            model_name=DEMO_DEPLOYMENT,
            adapter_name="demo-triage",
            embedding=EMBEDDING_DEPLOYMENT,
        )
        if route is not None:
            self.stdout.write(
                f"Demo route '{route.name}' (task classes → demo-llama or demo-triage) granted "
                "to the demo application: call it as the model 'auto'."
            )

    def _serve(self, host: str, port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603 - our own server
            [
                sys.executable,
                "-m",
                "uvicorn",
                "appliance.asgi:application",
                "--host",
                host,
                "--port",
                str(port),
                "--no-server-header",
                "--no-access-log",  # a key someone put in a URL must not reach a log
            ]
        )

    def _wait_until_up(self, url: str, server: subprocess.Popen[bytes]) -> None:
        for _ in range(120):
            if server.poll() is not None:
                raise CommandError("the control plane did not start (see above)")
            try:
                if httpx.get(f"{url}/healthz", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise CommandError("the control plane did not answer /healthz within a minute")

    def _enroll(self, url: str, state_dir: Path) -> None:
        if (state_dir / "node.json").exists():
            return
        _, token = services.enrollment_token_create(
            actor=system_actor("run_appliance"), name=LOCAL_NODE, expires_in_hours=1
        )
        env = {**os.environ, "APPLIANCE_ENROLLMENT_TOKEN": token}
        subprocess.run(  # noqa: S603 - our own agent
            agent_command(state_dir, "enroll", "--server", url, "--name", LOCAL_NODE),
            env=env,
            check=True,
        )

    def _deploy_demo(self) -> None:
        node = Node.objects.get(name=LOCAL_NODE)
        if node.status != NodeStatus.ONLINE:
            return
        self._deploy_embedding(node)
        if Deployment.objects.filter(name=DEMO_DEPLOYMENT).exists():
            return
        model = BaseModel.objects.get(name="demo-llama", status=EntryStatus.APPROVED)
        adapters = list(Adapter.objects.filter(name="demo-triage", status=EntryStatus.APPROVED))
        deployments.deployment_create(
            actor=system_actor("run_appliance"),
            name=DEMO_DEPLOYMENT,
            model=model,
            adapters=adapters,
            device=Device.CPU,
            node=node,
            max_model_len=512,
            max_loras=2,
            max_lora_rank=8,
            description="The generated demo model on the CPU build of vLLM (make run).",
        )

    def _deploy_embedding(self, node: Node) -> None:
        """The embedding model on the CPU too (the demo route's semantic classifier)."""
        model = BaseModel.objects.filter(
            name=EMBEDDING_DEPLOYMENT, status=EntryStatus.APPROVED
        ).first()
        if model is None or Deployment.objects.filter(name=EMBEDDING_DEPLOYMENT).exists():
            return
        deployments.deployment_create(
            actor=system_actor("run_appliance"),
            name=EMBEDDING_DEPLOYMENT,
            model=model,
            device=Device.CPU,
            node=node,
            max_model_len=256,
            description="all-MiniLM-L6-v2 for the demo route's semantic classifier (make run).",
        )

    def _agent(self, state_dir: Path, engine_python: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603 - our own agent
            agent_command(state_dir, "run", "--engine-python", engine_python)
        )

    def _audit_jobs(self) -> None:
        """Sign a checkpoint and feed the witness; a failure is reported and the appliance keeps
        serving (the next minute tries again; `audit verify` says what is wrong)."""
        try:
            checkpoint_create()
        except DomainError as exc:
            self.stderr.write(f"audit checkpoint not signed: {exc.detail}")
        except Exception as exc:
            self.stderr.write(f"audit checkpoint not signed: {type(exc).__name__}: {exc}")
        try:
            witness_forward()  # does nothing unless a witness address is set
        except Exception as exc:
            self.stderr.write(f"audit witness not fed: {type(exc).__name__}: {exc}")

    def _periodic(self, children: list[subprocess.Popen[bytes]], stopping: Any) -> None:
        """What celery beat does in production: node liveness, GPU history, usage rollups,
        the expiry events of emergency access, and audit checkpoints."""
        next_liveness = next_rollup = 0.0
        while not stopping():
            for child in children:
                if child.poll() is not None:
                    raise CommandError(f"a child process exited ({child.args!r}); stopping")
            now = time.monotonic()
            if now >= next_liveness:
                services.nodes_mark_offline()
                next_liveness = now + settings.APPLIANCE_HEARTBEAT_SECONDS
            if now >= next_rollup:
                gpu_samples_rollup()
                usage_rollup()
                break_glass_expire()
                cost_refresh()
                evaluations_sweep()
                self._audit_jobs()
                next_rollup = now + ROLLUP_EVERY_SECONDS
            time.sleep(1)
