"""The audit witness: events and checkpoints reach a real syslog receiver (RFC 5424 over RFC 6587
octet counting, plain or TLS), survive the receiver being down in the spool, and are never lost
when a connection breaks mid-batch."""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.audit import tasks, witness
from appliance.audit.canonical import canonical_bytes, leaf_hash
from appliance.audit.checkpoints import checkpoint_create, checkpoint_note
from appliance.audit.models import AuditEvent
from appliance.audit.services import audit_record, event_document_of
from appliance.core.actors import system_actor
from appliance.core.startup import production_problems
from tests.core.test_startup import start_django

pytestmark = pytest.mark.django_db

HOSTNAME = "appliance-test"
HEADER = re.compile(
    rb"<(?P<pri>\d+)>1 (?P<time>\S+) (?P<host>\S+) appliance - (?P<msgid>\S+) - (?P<msg>.*)",
    re.DOTALL,
)


class Receiver:
    """A syslog receiver on 127.0.0.1 that reads octet-counted frames exactly (never past a
    frame), optionally over TLS, and can drop one connection after a given number of frames."""

    def __init__(
        self, port: int = 0, tls: ssl.SSLContext | None = None, drop_after: int | None = None
    ) -> None:
        self.frames: list[bytes] = []
        self.tls = tls
        self.drop_after = drop_after
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def messages(self) -> list[bytes]:
        return [frame.split(b" ", 1)[1] for frame in self.frames]

    def stop(self) -> None:
        self.running = False
        self.thread.join(5)
        self.listener.close()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                self._read(conn)
            except (OSError, ValueError):
                pass  # a client we refuse, or one that broke off
            finally:
                conn.close()  # with bytes unread, the kernel resets the connection

    def _read(self, conn: socket.socket) -> None:
        while True:
            header = b""
            while not header.endswith(b" "):
                byte = conn.recv(1)
                if not byte:
                    return  # the client closed cleanly between frames
                if not (byte.isdigit() or byte == b" "):
                    raise ValueError(f"not an octet count: {header + byte!r}")
                header += byte
            body = self._exactly(conn, int(header))
            self.frames.append(header + body)
            if self.drop_after is not None and len(self.frames) >= self.drop_after:
                self.drop_after = None
                return  # drop the connection mid-batch

    @staticmethod
    def _exactly(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ValueError("the frame was cut short")
            data += chunk
        return data


def payload(message: bytes) -> Any:
    match = HEADER.fullmatch(message)
    assert match is not None, message
    return json.loads(match["msg"])


def event_seqs(receiver: Receiver) -> list[int]:
    return [
        payload(message)["seq"]
        for message in receiver.messages()
        if message.split(b" ")[5] == b"audit-event"
    ]


def record(count: int) -> None:
    for i in range(count):
        audit_record(actor=system_actor(), action="test.thing", details={"i": i})


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def spool_dir(settings: Any, tmp_path: Path) -> Path:
    """The witness on plain TCP with a private spool; each test points it at its receiver."""
    settings.APPLIANCE_AUDIT_WITNESS_SPOOL_DIR = tmp_path / "witness"
    settings.APPLIANCE_AUDIT_WITNESS_HOSTNAME = HOSTNAME
    settings.APPLIANCE_AUDIT_WITNESS_TLS = False
    settings.APPLIANCE_AUDIT_WITNESS_CA_FILE = ""
    settings.APPLIANCE_AUDIT_WITNESS_BATCH = 500
    return tmp_path / "witness"


@pytest.fixture
def receiver(settings: Any, spool_dir: Path) -> Iterator[Receiver]:
    server = Receiver()
    settings.APPLIANCE_AUDIT_WITNESS_ADDRESS = server.address
    yield server
    server.stop()


def test_events_are_rfc5424_messages_in_octet_counted_frames(receiver: Receiver) -> None:
    record(3)
    result = witness.witness_forward()
    assert (result.collected, result.sent, result.pending) == (3, 3, 0)
    assert len(receiver.frames) == 3
    for frame, event in zip(receiver.frames, AuditEvent.objects.order_by("seq"), strict=True):
        count, message = frame.split(b" ", 1)
        assert int(count) == len(message)
        match = HEADER.fullmatch(message)
        assert match is not None
        assert match["pri"] == b"110"  # facility 13 (log audit) * 8 + severity 6 (info)
        assert match["host"] == HOSTNAME.encode()
        assert match["msgid"] == b"audit-event"
        canonical = canonical_bytes(event_document_of(event))
        assert match["time"].decode() == json.loads(canonical)["time"]
        prefix = b'{"seq":%d,"leaf_hash":"%s","event":' % (event.seq, event.leaf_hash.encode())
        assert match["msg"] == prefix + canonical + b"}"  # the exact leaf bytes, verbatim
        assert leaf_hash(canonical) == event.leaf_hash == payload(message)["leaf_hash"]


def test_spool_survives_a_receiver_outage_and_delivers_once_in_order(
    settings: Any, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings.APPLIANCE_AUDIT_WITNESS_ADDRESS = f"127.0.0.1:{port}"  # nothing listens yet
    record(5)
    first = witness.witness_forward()
    assert (first.collected, first.sent, first.pending) == (5, 0, 5)
    assert first.error
    record(3)
    assert witness.witness_forward().pending == 8
    assert "test.thing" not in caplog.text  # warned about, never with a payload
    assert spool_dir.stat().st_mode & 0o777 == 0o700
    for path in spool_dir.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path

    server = Receiver(port=port)
    try:
        delivered = tasks.witness_forward()  # the periodic job, as beat runs it
        assert delivered == {"collected": 0, "sent": 8, "pending": 0, "error": ""}
        assert event_seqs(server) == list(range(1, 9))
        again = witness.witness_forward()
        assert (again.collected, again.sent, again.pending) == (0, 0, 0)
        assert len(server.frames) == 8
        assert (spool_dir / witness.SPOOL_FILE).stat().st_size == 0  # emptied once all sent
    finally:
        server.stop()


def test_a_connection_dropped_mid_batch_resends_from_the_last_confirmed_offset(
    settings: Any, receiver: Receiver
) -> None:
    settings.APPLIANCE_AUDIT_WITNESS_BATCH = 3
    receiver.drop_after = 5  # takes batch 1-3, then drops 4-6 after reading 4 and 5
    record(10)
    broken = witness.witness_forward()
    assert (broken.sent, broken.pending) == (3, 7)
    assert event_seqs(receiver) == [1, 2, 3, 4, 5]
    resumed = witness.witness_forward()
    assert (resumed.sent, resumed.pending) == (7, 0)
    # Batch 4-6 is sent whole again: 4 and 5 twice (documented), nothing missing, order kept.
    assert event_seqs(receiver) == [1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 10]


def test_bytes_a_crashed_collect_left_unrecorded_are_dropped_not_sent(
    settings: Any, spool_dir: Path, receiver: Receiver
) -> None:
    settings.APPLIANCE_AUDIT_WITNESS_ADDRESS = f"127.0.0.1:{free_port()}"
    record(2)
    assert witness.witness_collect().pending == 2
    with open(spool_dir / witness.SPOOL_FILE, "ab") as spool:
        spool.write(b"57 <110>1 half a recor")  # a run that died before saving its cursor
    record(1)
    settings.APPLIANCE_AUDIT_WITNESS_ADDRESS = receiver.address
    assert witness.witness_forward().sent == 3
    assert event_seqs(receiver) == [1, 2, 3]


def test_checkpoints_follow_the_events_they_cover(receiver: Receiver) -> None:
    record(4)
    checkpoint = checkpoint_create(force=True)
    assert checkpoint is not None
    witness.witness_forward()
    messages = receiver.messages()
    match = HEADER.fullmatch(messages[-1])
    assert match is not None
    assert (match["pri"], match["msgid"]) == (b"109", b"audit-checkpoint")  # severity 5: notice
    assert json.loads(match["msg"]) == {
        "tree_size": checkpoint.tree_size,
        "root": checkpoint.root,
        "origin": checkpoint.origin,
        "key_fingerprint": checkpoint.key.fingerprint,
        "note": checkpoint_note(checkpoint),
    }
    assert event_seqs(receiver) == list(range(1, checkpoint.tree_size + 1))

    record(1)
    later = checkpoint_create(force=True)
    assert later is not None
    witness.witness_forward()
    tail = [payload(message) for message in receiver.messages()[len(messages) :]]
    assert [entry.get("seq", entry.get("tree_size")) for entry in tail] == [
        checkpoint.tree_size + 1,
        later.tree_size,
    ]


def test_a_long_log_is_collected_a_slice_per_run(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(witness, "COLLECT_LIMIT", 3)
    record(4)
    checkpoint = checkpoint_create(force=True)
    assert checkpoint is not None
    assert witness.witness_forward().sent == 3  # the checkpoint waits for the events it covers
    while witness.witness_forward().sent:
        pass
    assert event_seqs(receiver) == list(range(1, checkpoint.tree_size + 1))
    assert payload(receiver.messages()[-1])["tree_size"] == checkpoint.tree_size


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test receiver")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir()
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_tls_delivers_to_a_trusted_receiver_and_refuses_plain_or_untrusted_ones(
    settings: Any, spool_dir: Path, tmp_path: Path
) -> None:
    cert_file, key_file = self_signed(tmp_path / "receiver")
    other_cert, _ = self_signed(tmp_path / "other")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_file, key_file)
    settings.APPLIANCE_AUDIT_WITNESS_TLS = True
    record(3)

    plain = Receiver()
    settings.APPLIANCE_AUDIT_WITNESS_ADDRESS = plain.address
    settings.APPLIANCE_AUDIT_WITNESS_CA_FILE = str(cert_file)
    try:
        assert witness.witness_forward().pending == 3
    finally:
        plain.stop()
    assert plain.frames == []

    secure = Receiver(tls=server_tls)
    settings.APPLIANCE_AUDIT_WITNESS_ADDRESS = secure.address
    try:
        settings.APPLIANCE_AUDIT_WITNESS_CA_FILE = str(other_cert)  # not the receiver's issuer
        assert witness.witness_forward().pending == 3
        assert secure.frames == []
        settings.APPLIANCE_AUDIT_WITNESS_CA_FILE = str(cert_file)
        result = witness.witness_forward()
        assert (result.sent, result.pending) == (3, 0)
        assert event_seqs(secure) == [1, 2, 3]
    finally:
        secure.stop()


def test_witness_off_opens_no_socket_and_writes_no_spool(
    settings: Any, spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.APPLIANCE_AUDIT_WITNESS_ADDRESS = ""

    def no_connection(*args: Any, **kwargs: Any) -> socket.socket:
        raise AssertionError("the witness opened a connection")

    monkeypatch.setattr(witness.socket, "create_connection", no_connection)
    record(2)
    assert witness.witness_forward() == witness.WitnessResult()
    assert witness.witness_collect() == witness.WitnessResult()
    assert witness.witness_send() == witness.WitnessResult()
    assert not spool_dir.exists()
    assert "audit-witness-forward" not in settings.CELERY_BEAT_SCHEDULE


def test_a_restored_shorter_log_is_forwarded_from_its_end(
    receiver: Receiver, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_dir.mkdir(mode=0o700)
    (spool_dir / witness.STATE_FILE).write_text(json.dumps({"event_seq": 50}))
    record(2)  # the restored log: events 1 and 2, already forwarded before the restore
    assert witness.witness_forward().sent == 0
    assert "was the database restored?" in caplog.text
    record(1)  # a new event 3, unlike the event 3 forwarded before: the receiver must see it
    assert witness.witness_forward().sent == 1
    assert event_seqs(receiver) == [3]


def test_production_refuses_a_witness_without_tls() -> None:
    safe: dict[str, Any] = {
        "debug": False,
        "secret_key": "k" * 60,
        "database_engine": "django.db.backends.postgresql",
        "allowed_hosts": ["appliance.example"],
    }
    plain = production_problems(**safe, witness_address="siem.example:514", witness_tls=False)
    assert [problem.split(":", 1)[0] for problem in plain] == ["appliance.E005"]
    assert production_problems(**safe, witness_address="siem.example:6514", witness_tls=True) == []
    assert production_problems(**safe, witness_address="", witness_tls=False) == []


def test_production_start_with_a_plain_witness_is_refused(tmp_path: Path) -> None:
    result = start_django(
        {
            "APPLIANCE_ENV": "production",
            "APPLIANCE_VAR_DIR": str(tmp_path),
            "APPLIANCE_SECRET_KEY": "k" * 60,
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
            "APPLIANCE_ALLOWED_HOSTS": "appliance.example",
            "APPLIANCE_AUDIT_WITNESS_ADDRESS": "siem.example:514",
            "APPLIANCE_AUDIT_WITNESS_TLS": "false",
        }
    )
    assert result.returncode != 0
    assert "appliance.E005" in result.stderr


def test_the_job_is_scheduled_and_registered_only_with_an_address(tmp_path: Path) -> None:
    script = (
        "import django; django.setup()\n"
        "from django.conf import settings\n"
        "from appliance.celery import app\n"
        "app.loader.import_default_modules()  # what a worker does at start: autodiscovery\n"
        "print(settings.CELERY_BEAT_SCHEDULE['audit-witness-forward']['task'] in app.tasks)\n"
    )
    result = start_django(
        {"APPLIANCE_VAR_DIR": str(tmp_path), "APPLIANCE_AUDIT_WITNESS_ADDRESS": "127.0.0.1:9"},
        code=script,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
