"""Tampered export bundles fail the auditor's verifier (a separate, isolated process) with a
message naming the problem: changed, deleted, reordered or appended events, an edited manifest,
another key, a missing or extra file; and what an attacker whose key the auditor pinned can and
cannot get past."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.audit.canonical import canonical_bytes
from appliance.audit.merkle import Frontier, leaf_hash
from tests.audit.bundles import (
    Built,
    Changes,
    Files,
    Log,
    assert_invalid,
    assert_valid,
    event_lines,
    forged_next,
    jsonl,
    members,
    rewrite_zip,
    verify,
)

pytestmark = pytest.mark.django_db

# Tampering with the bundle.


def _flip_event_byte(files: Files) -> Changes:
    lines = event_lines(files)
    line = bytearray(lines[2])
    line[line.index(b"event number") + 3] ^= 0x01  # 'event' becomes 'evdnt'
    lines[2] = bytes(line)
    return {"events.jsonl": jsonl(lines)}


def _delete_event(files: Files) -> Changes:
    lines = event_lines(files)
    del lines[3]
    return {"events.jsonl": jsonl(lines)}


def _swap_events(files: Files) -> Changes:
    lines = event_lines(files)
    lines[2], lines[3] = lines[3], lines[2]
    return {"events.jsonl": jsonl(lines)}


def _append_forged_event(files: Files) -> Changes:
    return {"events.jsonl": jsonl([*event_lines(files), forged_next(event_lines(files))])}


def _edit_manifest(change: Callable[[dict[str, Any]], None]) -> Callable[[Files], Changes]:
    def mutate(files: Files) -> Changes:
        manifest = json.loads(files["manifest.json"])
        change(manifest)
        return {"manifest.json": rfc8785.dumps(manifest)}

    return mutate


def _shorter_range(manifest: dict[str, Any]) -> None:
    manifest["range"]["last_seq"] -= 1


def _other_events_hash(manifest: dict[str, Any]) -> None:
    manifest["files"]["events.jsonl"]["sha256"] = hashlib.sha256(b"other events").hexdigest()


def pem_of(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def raw_of(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint_of(key: Ed25519PrivateKey) -> str:
    return "sha256:" + hashlib.sha256(raw_of(key)).hexdigest()


def _swap_in_another_key(files: Files) -> Changes:
    attacker = Ed25519PrivateKey.generate()
    signature = attacker.sign(files["manifest.json"]).hex().encode("ascii") + b"\n"
    return {"pubkey.pem": pem_of(attacker), "manifest.sig": signature}


def _flip_csv_byte(files: Files) -> Changes:
    data = bytearray(files["events.csv"])
    data[len(data) // 2] ^= 0x01
    return {"events.csv": bytes(data)}


TAMPERING: list[Any] = [
    pytest.param(
        _flip_event_byte, "events.jsonl differs from the manifest", id="byte of an event flipped"
    ),
    pytest.param(_delete_event, "events.jsonl differs from the manifest", id="event deleted"),
    pytest.param(_swap_events, "events.jsonl differs from the manifest", id="events swapped"),
    pytest.param(
        _append_forged_event, "events.jsonl differs from the manifest", id="forged event appended"
    ),
    pytest.param(
        _edit_manifest(_shorter_range),
        "manifest.sig is not a valid signature of manifest.json by this key",
        id="manifest range edited",
    ),
    pytest.param(
        _edit_manifest(_other_events_hash),
        "manifest.sig is not a valid signature of manifest.json by this key",
        id="manifest file hash edited",
    ),
    pytest.param(
        _swap_in_another_key, "not the one you trust", id="another key swapped in and re-signed"
    ),
    pytest.param(
        lambda files: {"manifest.sig": b"not a signature\n"},
        "manifest.sig is not a hex signature",
        id="signature replaced",
    ),
    pytest.param(
        lambda files: {"events.csv": None},
        "the bundle's files differ: missing ['events.csv'], unexpected []",
        id="file missing",
    ),
    pytest.param(
        lambda files: {"notes.txt": b"trust me\n"},
        "the bundle's files differ: missing [], unexpected ['notes.txt']",
        id="extra file",
    ),
    pytest.param(_flip_csv_byte, "events.csv differs from the manifest", id="byte of csv flipped"),
]


def test_rezipping_without_changes_keeps_the_bundle_valid(
    ranged_export: Built, export_log: Log
) -> None:
    """So each tampering case below fails for its change, not for the re-zipping."""
    same = rewrite_zip(ranged_export.bundle, ranged_export.bundle.parent / "same.zip", {})
    assert members(same) == ranged_export.files
    assert_valid(verify(same, export_log.fingerprint, verifier_from=ranged_export.bundle))


@pytest.mark.parametrize(("mutate", "problem"), TAMPERING)
def test_tampered_bundle_fails_naming_the_problem(
    ranged_export: Built, export_log: Log, mutate: Callable[[Files], Changes], problem: str
) -> None:
    tampered = rewrite_zip(
        ranged_export.bundle,
        ranged_export.bundle.parent / "tampered.zip",
        mutate(ranged_export.files),
    )
    assert members(tampered) != ranged_export.files

    report = verify(tampered, export_log.fingerprint, verifier_from=ranged_export.bundle)

    assert_invalid(report, problem)


# An attacker whose key the auditor was given. The fingerprint is the verifier's only trust
# anchor: whatever that key signs, including the list of other keys, is believed. What protects
# the content is that the checkpoint notes are signed by the appliance's key, which the attacker
# does not have; so re-signing a genuine bundle changes nothing that matters, and any change to
# the events shows up as a note that no longer verifies.


def _resigned(
    files: Files,
    attacker: Ed25519PrivateKey,
    *,
    new_files: Files | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Changes:
    """The attacker's bundle: their files, every hash in the manifest fixed up, their key as the
    manifest's signer, the manifest signed by them."""
    merged = {**files, **(new_files or {}), "pubkey.pem": pem_of(attacker)}
    manifest = json.loads(files["manifest.json"])
    for name, entry in manifest["files"].items():
        entry.update(sha256=hashlib.sha256(merged[name]).hexdigest(), size=len(merged[name]))
    manifest["key_fingerprint"] = fingerprint_of(attacker)
    manifest["keys"][fingerprint_of(attacker)] = raw_of(attacker).hex()
    if edit:
        edit(manifest)
    data = rfc8785.dumps(manifest)
    signature = attacker.sign(data).hex().encode("ascii") + b"\n"
    return {
        **(new_files or {}),
        "pubkey.pem": merged["pubkey.pem"],
        "manifest.json": data,
        "manifest.sig": signature,
    }


def _edited_events(files: Files) -> tuple[Files, bytes]:
    """events.jsonl with the last event's details rewritten, and the root of the edited log."""
    lines = event_lines(files)
    document = json.loads(lines[-1])
    document["details"] = {"rewritten": "history"}
    lines[-1] = canonical_bytes(document)
    frontier = Frontier()
    frontier.extend(leaf_hash(line) for line in lines)
    return {"events.jsonl": jsonl(lines)}, frontier.root()


def _set_root(root: bytes, *, in_note: bool) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        checkpoint = manifest["checkpoint"]
        checkpoint["root"] = root.hex()
        if in_note:
            lines = checkpoint["note"].split("\n")
            lines[2] = base64.b64encode(root).decode("ascii")
            checkpoint["note"] = "\n".join(lines)

    return edit


def test_genuine_bundle_resigned_by_the_pinned_key_verifies_on_the_notes_of_the_real_key(
    full_export: Built,
) -> None:
    attacker = Ed25519PrivateKey.generate()
    bundle = rewrite_zip(
        full_export.bundle,
        full_export.bundle.parent / "resigned.zip",
        _resigned(full_export.files, attacker),
    )
    report = verify(bundle, fingerprint_of(attacker), verifier_from=full_export.bundle)
    assert_valid(report)  # nothing in it was changed: the real key's notes still vouch for it


def test_edited_event_under_the_pinned_key_does_not_hash_to_the_signed_tree(
    full_export: Built,
) -> None:
    attacker = Ed25519PrivateKey.generate()
    new_files, _ = _edited_events(full_export.files)
    bundle = rewrite_zip(
        full_export.bundle,
        full_export.bundle.parent / "forged.zip",
        _resigned(full_export.files, attacker, new_files=new_files),
    )
    report = verify(bundle, fingerprint_of(attacker), verifier_from=full_export.bundle)
    assert_invalid(report, "the events do not hash to the signed checkpoint's tree")


def test_edited_event_with_a_recomputed_root_is_refused_by_the_real_keys_note(
    full_export: Built,
) -> None:
    attacker = Ed25519PrivateKey.generate()
    new_files, root = _edited_events(full_export.files)
    changes = _resigned(
        full_export.files, attacker, new_files=new_files, edit=_set_root(root, in_note=False)
    )
    bundle = rewrite_zip(full_export.bundle, full_export.bundle.parent / "forged.zip", changes)
    report = verify(bundle, fingerprint_of(attacker), verifier_from=full_export.bundle)
    assert_invalid(report, "the checkpoint note's root differs from the manifest's")


def test_edited_event_with_a_rewritten_note_has_no_valid_note_signature(full_export: Built) -> None:
    attacker = Ed25519PrivateKey.generate()
    new_files, root = _edited_events(full_export.files)
    changes = _resigned(
        full_export.files, attacker, new_files=new_files, edit=_set_root(root, in_note=True)
    )
    bundle = rewrite_zip(full_export.bundle, full_export.bundle.parent / "forged.zip", changes)
    report = verify(bundle, fingerprint_of(attacker), verifier_from=full_export.bundle)
    assert_invalid(report, "the checkpoint note has no valid signature by its key")


def test_attacker_key_listed_under_the_real_keys_fingerprint_is_refused(full_export: Built) -> None:
    attacker = Ed25519PrivateKey.generate()
    new_files, root = _edited_events(full_export.files)

    def claim_the_real_fingerprint(manifest: dict[str, Any]) -> None:
        _set_root(root, in_note=True)(manifest)
        manifest["keys"][manifest["checkpoint"]["key_fingerprint"]] = raw_of(attacker).hex()

    changes = _resigned(
        full_export.files, attacker, new_files=new_files, edit=claim_the_real_fingerprint
    )
    bundle = rewrite_zip(full_export.bundle, full_export.bundle.parent / "forged.zip", changes)
    report = verify(bundle, fingerprint_of(attacker), verifier_from=full_export.bundle)
    assert_invalid(report, "a key listed in the manifest does not match its fingerprint")
