"""The audit witness: every audit event and signed checkpoint, forwarded to an outside syslog
receiver (a SIEM), so that whoever holds root on the appliance cannot silently rewrite history.

Records first go to an append-only spool in ``APPLIANCE_AUDIT_WITNESS_SPOOL_DIR`` holding the exact
bytes to put on the wire (RFC 5424 messages, RFC 6587 octet counting), then to the receiver in
batches, one TCP or TLS connection per batch. A batch counts as delivered only once the receiver
has read all of it and closed the connection cleanly (``_confirm``); the state file then records
the spool offset reached. After a failure the next run resends from that offset, so the receiver
may see a record twice but never misses one. Nothing leaves the box unless an address is set.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import ssl
import struct
import termios
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from appliance.agent.config import write_private
from appliance.audit.canonical import format_time, leaf_hash
from appliance.audit.checkpoints import checkpoint_note
from appliance.audit.models import AuditCheckpoint, AuditEvent
from appliance.audit.tree import StoredEvent, stored_events

logger = logging.getLogger(__name__)

FACILITY_AUDIT = 13  # RFC 5424 "log audit"
SEVERITY_NOTICE = 5
SEVERITY_INFO = 6
APP_NAME = "appliance"
MSGID_EVENT = "audit-event"
MSGID_CHECKPOINT = "audit-checkpoint"
NILVALUE = "-"
TIMEOUT_SECONDS = 5.0  # connect, each send and the wait for the receiver's close
COLLECT_LIMIT = 50_000  # events per run, so a first run over a long log fits the task's limit
SPOOL_FILE = "records.spool"
STATE_FILE = "state.json"
LOCK_FILE = "lock"
_PRINTUSASCII = re.compile(r"[!-~]{1,255}")  # RFC 5424 HOSTNAME
_MAX_HEADER = 10  # digits of an octet count, plus the space


class WitnessSpoolDamaged(Exception):
    """The spool does not hold what the state file says; forwarding stops rather than guess."""


@dataclass(frozen=True)
class WitnessResult:
    """What one run did: records added to the spool, records delivered, records still waiting."""

    collected: int = 0
    sent: int = 0
    pending: int = 0
    error: str = ""  # why sending stopped (never a payload)


@dataclass(frozen=True)
class SpoolState:
    """The cursor into the audit log and the spool's offsets, saved atomically after each step."""

    event_seq: int = 0  # last event spooled
    checkpoint_id: int = 0  # last checkpoint spooled
    spool_size: int = 0  # bytes of the spool holding recorded records (more is a crashed write)
    spool_records: int = 0
    sent_offset: int = 0  # bytes of the spool the receiver has confirmed
    sent_records: int = 0

    @property
    def pending(self) -> int:
        return self.spool_records - self.sent_records


# Messages ----------------------------------------------------------------------------------------


def syslog_message(*, severity: int, timestamp: str, msgid: str, payload: str) -> bytes:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`` (RFC 5424), UTF-8."""
    pri = FACILITY_AUDIT * 8 + severity
    header = f"<{pri}>1 {timestamp} {_hostname()} {APP_NAME} {NILVALUE} {msgid} {NILVALUE}"
    return f"{header} {payload}".encode()


def _non_canonical(event: StoredEvent) -> bytes:
    """A row that no longer canonicalises (only a changed row can't) is still sent, as it is."""
    return json.dumps(event.document, sort_keys=True, separators=(",", ":"), default=str).encode()


def event_message(event: StoredEvent) -> bytes:
    """The event's canonical bytes embedded verbatim, so the receiver keeps the exact leaf."""
    data = event.data if event.data is not None else _non_canonical(event)
    text = data.decode("utf-8")
    payload = f'{{"seq":{event.seq},"leaf_hash":{json.dumps(event.stored_leaf)},"event":{text}}}'
    timestamp = json.loads(text)["time"]  # already RFC 3339 UTC with microseconds
    return syslog_message(
        severity=SEVERITY_INFO, timestamp=timestamp, msgid=MSGID_EVENT, payload=payload
    )


def checkpoint_message(checkpoint: AuditCheckpoint) -> bytes:
    document = {
        "tree_size": checkpoint.tree_size,
        "root": checkpoint.root,
        "origin": checkpoint.origin,
        "key_fingerprint": checkpoint.key.fingerprint,
        "note": checkpoint_note(checkpoint),
    }
    return syslog_message(
        severity=SEVERITY_NOTICE,
        timestamp=format_time(checkpoint.created_at),
        msgid=MSGID_CHECKPOINT,
        payload=json.dumps(document, separators=(",", ":"), ensure_ascii=False),
    )


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d %s" % (len(message), message)


def _hostname() -> str:
    name: str = settings.APPLIANCE_AUDIT_WITNESS_HOSTNAME
    return name if _PRINTUSASCII.fullmatch(name) else NILVALUE


def witness_address() -> tuple[str, int] | None:
    """``(host, port)`` of the receiver, or None when the witness is off."""
    raw: str = settings.APPLIANCE_AUDIT_WITNESS_ADDRESS
    if not raw:
        return None
    host, _, port = raw.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ImproperlyConfigured(
            "APPLIANCE_AUDIT_WITNESS_ADDRESS must be host:port (e.g. siem.example:6514)"
        )
    return host, int(port)


# The spool ---------------------------------------------------------------------------------------


def _spool_dir() -> Path:
    root = Path(settings.APPLIANCE_AUDIT_WITNESS_SPOOL_DIR)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    root.chmod(0o700)
    return root


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """The spool's lock: two workers never interleave records or send the same batch twice."""
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _load_state(root: Path) -> SpoolState:
    try:
        data = json.loads((root / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return SpoolState()
    return SpoolState(**{f.name: int(data.get(f.name, 0)) for f in fields(SpoolState)})


def _save_state(root: Path, state: SpoolState) -> None:
    """Written whole (temp file, fsync, rename), then the directory fsynced: a crash leaves the
    old state or the new."""
    write_private(root / STATE_FILE, asdict(state))
    directory = os.open(root, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _rewound(state: SpoolState) -> SpoolState:
    """A log restored from an older backup is shorter than what was already forwarded. Say so,
    and go on from its end, so the receiver sees the diverging events instead of a silence."""
    last_seq = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    last_id = AuditCheckpoint.objects.order_by("-id").values_list("id", flat=True).first() or 0
    if last_seq >= state.event_seq and last_id >= state.checkpoint_id:
        return state
    logger.error(
        "the audit log ends at event %s but the witness already forwarded event %s (checkpoint "
        "%s of %s); was the database restored?",
        last_seq,
        state.event_seq,
        last_id,
        state.checkpoint_id,
    )
    return replace(
        state,
        event_seq=min(last_seq, state.event_seq),
        checkpoint_id=min(last_id, state.checkpoint_id),
    )


def _collect(root: Path, state: SpoolState) -> tuple[SpoolState, int]:
    """Append new events, then the checkpoints they complete (a checkpoint never precedes the
    events it covers), and record the new cursor only once the spool is on disk."""
    rewound = _rewound(state)
    if rewound != state:
        _save_state(root, rewound)  # warn once, not every minute
    state = rewound
    fd = os.open(root / SPOOL_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as spool:
        if os.fstat(fd).st_size < state.spool_size:
            raise WitnessSpoolDamaged(
                f"{root / SPOOL_FILE} is shorter than recorded; delete {root} to resend the whole log"
            )
        spool.truncate(state.spool_size)  # records a crashed run wrote but never recorded
        event_seq, count = state.event_seq, 0
        for event in stored_events(state.event_seq, state.event_seq + COLLECT_LIMIT):
            if event.data is None or leaf_hash(event.data) != event.stored_leaf:
                logger.warning("audit event %s does not match its stored leaf hash", event.seq)
            spool.write(octet_frame(event_message(event)))
            event_seq, count = event.seq, count + 1
        checkpoint_id = state.checkpoint_id
        for checkpoint in _checkpoints(state.checkpoint_id, event_seq):
            spool.write(octet_frame(checkpoint_message(checkpoint)))
            checkpoint_id, count = checkpoint.pk, count + 1
        if not count:
            return state, 0
        spool.flush()
        os.fsync(fd)
        size = os.fstat(fd).st_size
    state = replace(
        state,
        event_seq=event_seq,
        checkpoint_id=checkpoint_id,
        spool_size=size,
        spool_records=state.spool_records + count,
    )
    _save_state(root, state)
    return state, count


def _checkpoints(after: int, covered: int) -> Iterator[AuditCheckpoint]:
    """Checkpoints after ``after`` over no more than the ``covered`` events already spooled
    (tree sizes only grow along the chain, so this is a prefix of the new ones)."""
    rows = AuditCheckpoint.objects.filter(pk__gt=after, tree_size__lte=covered)
    return rows.select_related("key").order_by("pk").iterator(chunk_size=500)


def _read_frame(spool: BinaryIO) -> bytes:
    header = b""
    while not header.endswith(b" "):
        byte = spool.read(1)
        if not (byte.isdigit() or (byte == b" " and header)) or len(header) > _MAX_HEADER:
            raise WitnessSpoolDamaged(f"no record starts at offset {spool.tell() - 1}")
        header += byte
    body = spool.read(int(header))
    if len(body) != int(header):
        raise WitnessSpoolDamaged("the spool ends inside a record")
    return header + body


def _batches(spool: BinaryIO, end: int, size: int) -> Iterator[tuple[bytes, int]]:
    """Whole frames from the current offset up to ``end``, ``size`` records at a time."""
    while spool.tell() < end:
        frames: list[bytes] = []
        while len(frames) < size and spool.tell() < end:
            frames.append(_read_frame(spool))
        yield b"".join(frames), len(frames)


def _rotate(root: Path, state: SpoolState) -> SpoolState:
    """Everything was delivered: empty the spool (state first, so a crash in between is
    repaired by the next collect's truncation)."""
    state = replace(state, spool_size=0, spool_records=0, sent_offset=0, sent_records=0)
    _save_state(root, state)
    os.truncate(root / SPOOL_FILE, 0)
    return state


# Sending -----------------------------------------------------------------------------------------


def _send(root: Path, state: SpoolState, address: tuple[str, int]) -> WitnessResult:
    sent = 0
    if state.sent_offset < state.spool_size:
        with open(root / SPOOL_FILE, "rb") as spool:
            spool.seek(state.sent_offset)
            batches = _batches(spool, state.spool_size, settings.APPLIANCE_AUDIT_WITNESS_BATCH)
            for batch, count in batches:
                try:
                    _deliver(address, batch)
                except OSError as exc:
                    error = str(exc) or type(exc).__name__
                    logger.warning(
                        "audit witness %s is not taking records (%s); %s pending",
                        settings.APPLIANCE_AUDIT_WITNESS_ADDRESS,
                        error,
                        state.pending,
                    )
                    return WitnessResult(sent=sent, pending=state.pending, error=error)
                state = replace(
                    state,
                    sent_offset=state.sent_offset + len(batch),
                    sent_records=state.sent_records + count,
                )
                _save_state(root, state)
                sent += count
    if state.spool_size:
        _rotate(root, state)
    return WitnessResult(sent=sent)


def _deliver(address: tuple[str, int], batch: bytes) -> None:
    """Send one batch on its own connection; returns only once the receiver confirmed it."""
    conn = socket.create_connection(address, timeout=TIMEOUT_SECONDS)
    if settings.APPLIANCE_AUDIT_WITNESS_TLS:
        context = ssl.create_default_context(
            cafile=settings.APPLIANCE_AUDIT_WITNESS_CA_FILE or None
        )
        conn = context.wrap_socket(conn, server_hostname=address[0])  # closes conn on failure
    with conn:
        conn.sendall(batch)
        _confirm(conn)


def _confirm(conn: socket.socket) -> None:
    """Syslog has no acknowledgements; TCP's end of stream serves. We close our side (TLS:
    close_notify first, RFC 5425 §4.4) and wait for the receiver to close its own. A receiver
    that closes with bytes unread resets the connection; one that closed before they arrived
    never acknowledges them. Either raises, and the batch is sent again."""
    if isinstance(conn, ssl.SSLSocket):
        try:
            conn.unwrap()  # the receiver answered with its close_notify
        except ssl.SSLEOFError:  # or closed TCP after reading ours: as good
            _wait_acknowledged(conn)
            return
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(4096):
        pass
    _wait_acknowledged(conn)


def _wait_acknowledged(conn: socket.socket) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while True:
        if conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            raise ConnectionResetError("the receiver reset the connection")
        if not _unacknowledged(conn):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the receiver did not acknowledge the whole batch")
        time.sleep(0.01)


def _unacknowledged(conn: socket.socket) -> int:
    """Bytes (our FIN included) the receiver's TCP has not acknowledged; 0 where the OS cannot
    tell (TIOCOUTQ is Linux's)."""
    request = getattr(termios, "TIOCOUTQ", None)
    if request is None:
        return 0
    try:
        answer = fcntl.ioctl(conn.fileno(), request, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", answer)[0])


# The steps ---------------------------------------------------------------------------------------

Step = Callable[[Path, SpoolState, tuple[str, int]], WitnessResult]


def _run(step: Step) -> WitnessResult:
    """Run ``step`` under the spool's lock; nothing at all (no file, no socket) when off."""
    address = witness_address()
    if address is None:
        return WitnessResult()
    root = _spool_dir()
    with _locked(root):
        return step(root, _load_state(root), address)


def _collect_step(root: Path, state: SpoolState, address: tuple[str, int]) -> WitnessResult:
    state, collected = _collect(root, state)
    return WitnessResult(collected=collected, pending=state.pending)


def _forward_step(root: Path, state: SpoolState, address: tuple[str, int]) -> WitnessResult:
    state, collected = _collect(root, state)
    return replace(_send(root, state, address), collected=collected)


def witness_collect() -> WitnessResult:
    """Spool the events and checkpoints that are not spooled yet (no network)."""
    return _run(_collect_step)


def witness_send() -> WitnessResult:
    """Send what the spool holds beyond the last confirmed offset."""
    return _run(_send)


def witness_forward() -> WitnessResult:
    """Collect, then send: what the periodic job runs."""
    return _run(_forward_step)
