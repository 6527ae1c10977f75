"""Writing one signed export bundle to disk (the format is in docs/audit.md).

Events stream from the table into ``events.jsonl`` and ``events.csv`` in a private working folder,
each leaf checked against its row on the way; the Merkle claims the manifest makes are checked
against the signed checkpoint before the manifest is signed, and the zip is renamed into place
only when complete. Memory stays flat however many events are exported.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from django.conf import settings
from django.utils import timezone

from appliance.audit.checkpoints import checkpoint_note
from appliance.audit.keys import public_pem, signer_of, signing_key_active
from appliance.audit.merkle import Frontier, consistency_proof, leaf_hash, verify_consistency
from appliance.audit.models import AuditCheckpoint
from appliance.audit.tree import EVENT_COLUMNS, StoredTree, stored_events
from appliance.core.errors import ValidationFailed
from appliance.registry.store import hash_file

FORMAT = "appliance-audit-export/1"
VERIFIER = Path(settings.BASE_DIR) / "compliance" / "verify_export.py"
CSV_COLUMNS = EVENT_COLUMNS
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets would run as a formula
PROGRESS_EVERY = 5000
ALGORITHMS = {
    "canonical": "RFC 8785 (JCS)",
    "leaf": "SHA-256(0x00 || event bytes)",
    "node": "SHA-256(0x01 || left || right)",
    "tree": "RFC 6962 Merkle Tree Hash",
    "signature": "Ed25519",
    "checkpoint": "C2SP signed note",
}


@dataclass(frozen=True)
class Bundle:
    path: Path
    sha256: str
    size: int
    selected: int  # rows in events.csv


def _cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text (OWASP CSV injection); events.jsonl stays exact."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _csv_row(document: dict[str, Any]) -> list[str]:
    cells = [
        str(document["seq"]),
        document["time"],
        document["actor"]["kind"],
        document["actor"]["id"],
        document["actor"]["label"],
        document["action"],
        document["object"]["type"],
        document["object"]["id"],
        document["outcome"],
        document["request_id"],
        document["source_ip"],
        json.dumps(document["details"], sort_keys=True, ensure_ascii=False),
    ]
    return [_cell(cell) for cell in cells]


def _prefix(size: int) -> Frontier:
    """The compact range of the first ``size`` leaves: one perfect subtree per set bit."""
    tree, hashes, start = StoredTree(), [], 0
    for bit in reversed(range(size.bit_length())):
        if size >> bit & 1:
            hashes.append(tree(start, 1 << bit))
            start += 1 << bit
    return Frontier(size, hashes)


def _checkpoint_json(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    return {
        "origin": checkpoint.origin,
        "tree_size": checkpoint.tree_size,
        "root": checkpoint.root,
        "note": checkpoint_note(checkpoint),
        "key_fingerprint": checkpoint.key.fingerprint,
    }


def _file_entry(path: Path) -> dict[str, Any]:
    sha256, size = hash_file(path)
    return {"sha256": sha256, "size": size}


def _write_events(
    folder: Path,
    first: int,
    last: int,
    frontier: Frontier,
    selected: Callable[[dict[str, Any]], bool],
    progress: Callable[[int], None],
) -> int:
    """events.jsonl and events.csv; returns the CSV's row count. Appends each leaf to
    ``frontier`` after checking it against the leaf stored with its row."""
    count = 0
    with (
        (folder / "events.jsonl").open("wb") as jsonl,
        (folder / "events.csv").open("w", encoding="utf-8", newline="") as text,
    ):
        rows = csv.writer(text, lineterminator="\n")
        rows.writerow(CSV_COLUMNS)
        for done, event in enumerate(stored_events(first - 1, last), start=1):
            data = event.data
            leaf = leaf_hash(data) if data is not None else b""
            if data is None or event.seq != frontier.size + 1 or leaf.hex() != event.stored_leaf:
                raise ValidationFailed(
                    f"Event {frontier.size + 1} is missing or changed; run `audit verify`."
                )
            frontier.append(leaf)
            jsonl.write(data + b"\n")
            if selected(event.document):
                count += 1
                rows.writerow(_csv_row(event.document))
            if done % PROGRESS_EVERY == 0:
                progress(done)
    if frontier.size != last:
        raise ValidationFailed(f"Event {frontier.size + 1} is missing; run `audit verify`.")
    return count


def bundle_write(
    *,
    path: Path,
    export_id: str,
    filters: dict[str, str],
    checkpoint: AuditCheckpoint,
    first: int,
    last: int,
    selected: Callable[[dict[str, Any]], bool],
    progress: Callable[[int], None],
) -> Bundle:
    """Write the bundle of events ``first..last`` proven against ``checkpoint`` to ``path``."""
    folder = Path(tempfile.mkdtemp(prefix=".bundle-", dir=path.parent))
    try:
        frontier = _prefix(first - 1)
        prefix = [h.hex() for h in frontier.hashes]
        rows = _write_events(folder, first, last, frontier, selected, progress)
        proof = consistency_proof(last, checkpoint.tree_size, StoredTree())
        if not verify_consistency(
            last, checkpoint.tree_size, frontier.root(), bytes.fromhex(checkpoint.root), proof
        ):
            raise ValidationFailed("The exported events do not hash to the signed checkpoint.")
        signer = signer_of(signing_key_active())
        (folder / "pubkey.pem").write_bytes(public_pem(signer.public_key))
        shutil.copyfile(VERIFIER, folder / "verify_export.py")
        previous = checkpoint.previous
        keys = {checkpoint.key.fingerprint: checkpoint.key.public_key}
        keys[signer.row.fingerprint] = signer.row.public_key
        if previous is not None:
            keys[previous.key.fingerprint] = previous.key.public_key
        hashed = ("events.jsonl", "events.csv", "pubkey.pem", "verify_export.py")
        manifest = rfc8785.dumps(
            {
                "format": FORMAT,
                "export_id": export_id,
                "origin": checkpoint.origin,
                "created_at": timezone.now().isoformat(),
                "filters": filters,
                "range": {"first_seq": first, "last_seq": last},
                "selected": rows,
                "prefix": {"size": first - 1, "hashes": prefix},
                "checkpoint": _checkpoint_json(checkpoint),
                "range_to_checkpoint": [h.hex() for h in proof],
                "previous_checkpoint": _checkpoint_json(previous) if previous else None,
                "previous_to_checkpoint": list(checkpoint.consistency) if previous else [],
                "keys": keys,
                "key_fingerprint": signer.row.fingerprint,
                "files": {name: _file_entry(folder / name) for name in hashed},
                "algorithms": ALGORITHMS,
            }
        )
        (folder / "manifest.json").write_bytes(manifest)
        (folder / "manifest.sig").write_bytes(signer.sign(manifest).hex().encode() + b"\n")
        partial = folder / "bundle.zip"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with (
            os.fdopen(fd, "wb") as handle,
            zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        ):
            for name in sorted((*hashed, "manifest.json", "manifest.sig")):
                archive.write(folder / name, arcname=name)
        with partial.open("rb") as written:
            os.fsync(written.fileno())
        entry = _file_entry(partial)
        os.replace(partial, path)
        return Bundle(path=path, sha256=entry["sha256"], size=entry["size"], selected=rows)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
