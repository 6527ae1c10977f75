"""Audit log speed on Postgres: append through the service layer, checkpoint after 100k new events,
``audit verify`` over 1M events, export of 100k events. Results go to docs/benchmarks.md.

    make bench-audit                     # Postgres at BENCH_DATABASE_URL (default: local postgres)
    python -m tests.bench.bench_audit --events 200000 --no-write   # a quicker look

It creates (and drops afterwards) its own database, so it never touches a real appliance's data.
The 1M events are written through ``audit_record_many``, the same path the gateway's group commit
uses; the single-event rate is measured separately with ``audit_record`` as services call it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "benchmarks.md"
SECTION = "## Audit log (append, checkpoint, verify, export)"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "appliance_bench_audit"


def _admin_url(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _recreate(url: str, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(_admin_url(url, "postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {BENCH_DB}")


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


THREADS = 8


def _threaded(total: int, threads: int) -> float:
    """Events/s with ``threads`` writers at once (each its own connection), as several request
    workers would write them."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from appliance.audit.services import audit_record
    from appliance.core.actors import system_actor

    def write(count: int) -> None:
        try:
            for i in range(count):
                audit_record(actor=system_actor(), action="bench.threaded", details={"i": i})
        finally:
            connection.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, [total // threads] * threads))
    return (total // threads) * threads / (time.perf_counter() - start)


def run(total: int, singles: int, tail: int, batch: int) -> dict[str, float]:
    from appliance.audit.checkpoints import checkpoint_create
    from appliance.audit.exports import audit_export_build, audit_export_request
    from appliance.audit.services import AuditEntry, audit_record, audit_record_many
    from appliance.audit.verification import audit_verify
    from appliance.core.actors import Actor, ActorKind, system_actor
    from appliance.core.models import Job

    app = Actor(kind=ActorKind.APPLICATION, id="7", label="discharge-summaries")
    details = {
        "endpoint": "chat/completions",
        "model": "demo-llama",
        "model_sha256": "a" * 64,
        "adapter": "radiology-lora",
        "node": "gpu-node-01",
        "api_key": "4f1c2a9e0b7d",
        "policy_version": 3,
        "status": 200,
    }

    def entries(n: int) -> list[AuditEntry]:
        return [
            AuditEntry(
                actor=app,
                action="inference.chat",
                object_type="model",
                object_id="demo-llama",
                details=details,
                request_id=f"{i:032x}",
                source_ip="10.1.2.3",
            )
            for i in range(n)
        ]

    figures: dict[str, float] = {}
    seconds, _ = _timed(
        lambda: [
            audit_record(actor=system_actor(), action="bench.single", details={"i": i})
            for i in range(singles)
        ]
    )
    figures["single_rate"] = singles / seconds
    figures["threaded_rate"] = _threaded(singles, THREADS)
    seconds, _ = _timed(lambda: [audit_record_many(entries(batch)) for _ in range(10_000 // batch)])
    figures["batch_rate"] = (10_000 // batch) * batch / seconds

    written = 2 * singles + (10_000 // batch) * batch
    while written < total - tail:
        n = min(1000, total - tail - written)
        audit_record_many(entries(n))
        written += n
    seconds, _ = _timed(lambda: checkpoint_create(force=True))
    figures["first_checkpoint"] = seconds
    figures["first_checkpoint_size"] = written
    tail_start = datetime.now(UTC)
    time.sleep(0.01)
    while written < total:
        n = min(1000, total - written)
        audit_record_many(entries(n))
        written += n
    seconds, checkpoint = _timed(lambda: checkpoint_create())
    figures["checkpoint_tail"] = seconds
    figures["tree_size"] = checkpoint.tree_size
    seconds, result = _timed(lambda: audit_verify(actor=system_actor("bench")))
    if not result.valid:
        raise SystemExit(f"verification failed: {result.problems[:5]}")
    figures["verify"] = seconds
    figures["verified"] = result.events_checked
    job = audit_export_request(
        actor=system_actor("bench"), filters={"since": tail_start}, enqueue=False
    )
    seconds, _ = _timed(lambda: audit_export_build(job_id=str(job.pk)))
    job = Job.objects.get(pk=job.pk)
    if job.error:
        raise SystemExit(f"export failed: {job.error}")
    figures["export"] = seconds
    figures["exported"] = job.progress_total
    return figures


def table(figures: dict[str, float], tail: int) -> str:
    machine = f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}, no GPU)"
    return "\n".join(
        [
            SECTION,
            "",
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine}, Postgres on the same",
            "machine, with `make bench-audit` (tests/bench/bench_audit.py).",
            "",
            "| What | Result | Target |",
            "|---|---|---|",
            f"| append, one event per transaction (`audit_record`) | "
            f"{figures['single_rate']:,.0f} events/s | ≥ 2,000 events/s |",
            f"| append, one event per transaction, {THREADS} writers at once | "
            f"{figures['threaded_rate']:,.0f} events/s | ≥ 2,000 events/s |",
            f"| append, group commit (`audit_record_many`, as the gateway) | "
            f"{figures['batch_rate']:,.0f} events/s | ≥ 2,000 events/s |",
            f"| first checkpoint over {figures['first_checkpoint_size']:,.0f} events | "
            f"{figures['first_checkpoint']:.1f} s | |",
            f"| checkpoint after {tail:,} new events (tree of {figures['tree_size']:,.0f}) | "
            f"{figures['checkpoint_tail']:.1f} s | |",
            f"| `audit verify` over {figures['verified']:,.0f} events | "
            f"{figures['verify']:.1f} s | < 30 s |",
            f"| export of {figures['exported']:,.0f} events (signed bundle) | "
            f"{figures['export']:.1f} s | < 10 s |",
            "",
            "One event per transaction is bound by commit latency: the sequence row stays locked",
            "until commit, so `seq` is gap-free and events become visible in `seq` order, and",
            "writers queue on it (more writers do not help). The high-volume writer, the gateway,",
            "appends through group commit (`audit_record_many`). Verification recomputes leaves",
            "in one worker process per core (2 here).",
            "",
        ]
    )


def write(text: str) -> None:
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    kept, skipping = [], False
    for line in existing.splitlines():
        if line.startswith("## "):
            skipping = line == SECTION
        if not skipping:
            kept.append(line)
    RESULTS.write_text("\n".join(kept).rstrip("\n") + "\n\n" + text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_audit")
    parser.add_argument("--events", type=int, default=1_000_000, help="log size to verify")
    parser.add_argument("--tail", type=int, default=100_000, help="new events to checkpoint/export")
    parser.add_argument("--singles", type=int, default=5_000, help="events appended one by one")
    parser.add_argument("--batch", type=int, default=100, help="group-commit batch size")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    options = parser.parse_args(argv)
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    _recreate(url)
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as var:
        os.environ.update(
            DATABASE_URL=_admin_url(url, BENCH_DB),
            APPLIANCE_VAR_DIR=var,
            DJANGO_SETTINGS_MODULE="appliance.settings",
        )
        os.environ.pop("REDIS_URL", None)
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        try:
            figures = run(options.events, options.singles, options.tail, options.batch)
        finally:
            from django.db import connections

            connections.close_all()
            _recreate(url, drop_only=True)
    text = table(figures, options.tail)
    print(text)
    if not options.no_write:
        write(text)
        print(f"written to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
