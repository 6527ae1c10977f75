"""The agent's own state on disk: where the control plane is and the node's credential.

The credential file is written with mode 0600 (created with O_EXCL under a temporary name, then
renamed), so no other user on the machine can read it, even for a moment.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CREDENTIAL_FILE = "node.json"
DESIRED_FILE = "desired.json"  # the last desired state, to resume engines after a restart
DEFAULT_STATE_DIR = "/var/lib/appliance-agent"


class NotEnrolled(Exception):
    """No credential file: run ``appliance-agent enroll`` first."""


@dataclass(frozen=True)
class Enrollment:
    server: str
    node_id: int
    name: str
    credential: str

    def __repr__(self) -> str:  # never print the credential
        return f"Enrollment(server={self.server!r}, node_id={self.node_id}, name={self.name!r})"


def state_dir(value: str | None) -> Path:
    return Path(value or os.environ.get("APPLIANCE_AGENT_STATE_DIR") or DEFAULT_STATE_DIR)


def write_private(target: Path, data: Any) -> Path:
    """Write JSON readable by this user only: a temporary file made 0600 with O_EXCL, then
    renamed over the target, so no reader ever sees a partial or a world-readable file."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.parent / f".{target.name}.{os.getpid()}"
    tmp.unlink(missing_ok=True)  # a leftover of a crashed run with the same pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def save_enrollment(directory: Path, enrollment: Enrollment) -> Path:
    return write_private(directory / CREDENTIAL_FILE, asdict(enrollment))


def load_enrollment(directory: Path) -> Enrollment:
    path = directory / CREDENTIAL_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise NotEnrolled(f"{path} does not exist; run `appliance-agent enroll` first.") from exc
    except (OSError, ValueError) as exc:
        raise NotEnrolled(f"{path} cannot be read: {type(exc).__name__}") from exc
    if path.stat().st_mode & 0o077:
        raise NotEnrolled(f"{path} is readable by others; it must be mode 0600.")
    try:
        return Enrollment(
            server=str(data["server"]),
            node_id=int(data["node_id"]),
            name=str(data["name"]),
            credential=str(data["credential"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise NotEnrolled(f"{path} is not a node credential file; enroll again.") from exc
