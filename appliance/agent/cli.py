"""``appliance-agent``: enroll this machine once, then run its engines.

    appliance-agent enroll --server https://appliance.example --token enr_…
    appliance-agent run

Errors are one line on stderr and a non-zero exit status; secrets are never printed.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any
from urllib.parse import urlsplit

from appliance.agent import client as control_plane
from appliance.agent.cache import ArtifactCache
from appliance.agent.config import (
    CREDENTIAL_FILE,
    DESIRED_FILE,
    Enrollment,
    NotEnrolled,
    load_enrollment,
    save_enrollment,
    state_dir,
)
from appliance.agent.engines import EngineRuntime, probe_runtime
from appliance.agent.nvml import collect
from appliance.agent.runner import Agent, NodeRefused, agent_version, memory_bytes

EXIT_USAGE, EXIT_FAILED, EXIT_REFUSED = 2, 1, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance-agent", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--state-dir", help="credential, artifact cache and engine logs (APPLIANCE_AGENT_STATE_DIR)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    enroll = commands.add_parser("enroll", help="exchange an enrollment token for a credential")
    enroll.add_argument("--server", required=True, help="the control plane's URL")
    enroll.add_argument(
        "--token", help="the one-time enrollment token (or APPLIANCE_ENROLLMENT_TOKEN)"
    )
    enroll.add_argument("--name", help="the node's name (default: this host's name)")
    enroll.add_argument("--ca-cert", help="CA bundle for the control plane's TLS certificate")
    enroll.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow a plain-HTTP server other than localhost",
    )

    run = commands.add_parser("run", help="heartbeat and run this node's engines")
    run.add_argument(
        "--engine-python",
        default=os.environ.get("APPLIANCE_ENGINE_PYTHON", sys.executable),
        help="the Python that has vLLM installed (APPLIANCE_ENGINE_PYTHON)",
    )
    run.add_argument(
        "--engine-host",
        type=private_address,
        default=os.environ.get("APPLIANCE_ENGINE_HOST", "127.0.0.1"),
        help="the private address engines listen on (default 127.0.0.1)",
    )
    run.add_argument("--interval", type=float, help="heartbeat seconds (default: the server's)")
    run.add_argument("--cpu-kv-cache-gib", type=int, default=1, help="KV cache of CPU engines")
    run.add_argument("--ca-cert", help="CA bundle for the control plane's TLS certificate")
    return parser


def private_address(value: str) -> str:
    """An engine listens only on loopback or a private address: never a wildcard or public one,
    because vLLM's /metrics, /tokenize and other routes need no key."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an IP address") from exc
    if address.is_unspecified or not (address.is_loopback or address.is_private):
        raise argparse.ArgumentTypeError(f"{value} is not a loopback or private address")
    return value


def _server_allowed(server: str, insecure: bool) -> str | None:
    """Why this control plane URL is refused, or None. Plain HTTP would carry the node's
    credential and the engines' API keys in the clear, so it is for this machine only."""
    url = urlsplit(server)
    if url.scheme == "https":
        return None
    if url.scheme != "http":
        return f"{server} is not an http(s) URL"
    if insecure or url.hostname in ("127.0.0.1", "::1", "localhost"):
        return None
    return f"{server} is plain HTTP; use https (or --insecure-http on a trusted network)"


def _fail(message: str, status: int = EXIT_FAILED) -> int:
    print(f"appliance-agent: {message}", file=sys.stderr)
    return status


def _enroll(args: argparse.Namespace) -> int:
    directory = state_dir(args.state_dir)
    if (directory / CREDENTIAL_FILE).exists():
        return _fail(
            f"already enrolled ({directory}); remove node.json to enroll again", EXIT_USAGE
        )
    token = args.token or os.environ.get("APPLIANCE_ENROLLMENT_TOKEN", "")
    if not token:
        return _fail("give --token or set APPLIANCE_ENROLLMENT_TOKEN", EXIT_USAGE)
    refusal = _server_allowed(args.server, args.insecure_http)
    if refusal:
        return _fail(refusal, EXIT_USAGE)
    name = args.name or socket.gethostname()
    host = collect()
    body: dict[str, Any] = {
        "token": token,
        "name": name,
        "hostname": socket.gethostname(),
        "agent_version": agent_version(),
        "platform": {
            "cpu_count": os.cpu_count(),
            "memory_bytes": memory_bytes(),
            "gpus": len(host.gpus),
        },
    }
    with control_plane.http_client(args.server, verify=args.ca_cert or True) as http:
        try:
            answer = control_plane.enroll(http, body)
        except (control_plane.Refused, control_plane.Rejected, control_plane.Unreachable) as exc:
            return _fail(f"enrollment failed: {exc}")
    path = save_enrollment(
        directory,
        Enrollment(
            server=args.server,
            node_id=int(answer["node_id"]),
            name=answer["name"],
            credential=answer["credential"],
        ),
    )
    print(f"enrolled as node {answer['name']} (id {answer['node_id']}); credential in {path}")
    return 0


def _run(args: argparse.Namespace) -> int:
    directory = state_dir(args.state_dir)
    try:
        enrollment = load_enrollment(directory)
    except NotEnrolled as exc:
        return _fail(str(exc), EXIT_USAGE)
    # Absolute, because engines run in their own directory; not resolved, because a venv's
    # python is a symlink whose location is what selects the venv.
    engine_python = os.path.abspath(args.engine_python)
    try:
        module, version = probe_runtime(engine_python)
    except (RuntimeError, OSError) as exc:
        return _fail(f"no vLLM to run engines with: {exc}")
    runtime = EngineRuntime(
        python=engine_python,
        module=module,
        version=version,
        host=args.engine_host,
        cpu_kv_cache_gib=args.cpu_kv_cache_gib,
        log_dir=directory / "logs",
        home=directory / "engine-home",
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    logging.info("node %s: vLLM %s (%s)", enrollment.name, version or "?", module)
    with control_plane.http_client(
        enrollment.server, enrollment.credential, verify=args.ca_cert or True
    ) as http:
        agent = Agent(
            http=http,
            runtime=runtime,
            cache=ArtifactCache(directory / "cache"),
            interval=args.interval,
            desired_file=directory / DESIRED_FILE,
        )
        try:
            agent.run(stop)
        except NodeRefused as exc:
            return _fail(
                f"the control plane refused this node ({exc}); engines stopped", EXIT_REFUSED
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines carry no value here
    args = _parser().parse_args(argv)
    if args.command == "enroll":
        return _enroll(args)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
