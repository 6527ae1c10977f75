#!/usr/bin/env python3
"""Verify an audit export bundle of the appliance, offline.

    python verify_export.py BUNDLE.zip --fingerprint sha256:<hex>

Needs Python 3.9+ and the ``cryptography`` package, nothing else (no network, no appliance code).
The fingerprint must come from the appliance out of band (console, or ``manage.py audit
fingerprint``), never from the bundle itself. Checks, in order: the bundle holds exactly the
expected files; the public key matches the fingerprint; the manifest's Ed25519 signature; each
file's size and SHA-256; events are one contiguous run of ``seq``; the Merkle root recomputed from
the exact event bytes (RFC 6962) is consistent with the signed checkpoint; the checkpoint notes'
signatures; the previous checkpoint's consistency with the exported one. Prints each check and
exits 0 only if every one passes (1 on any failure, 2 on bad usage).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
import zipfile
import zlib
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "appliance-audit-export/1"
EXPECTED_FILES = {
    "events.jsonl",
    "events.csv",
    "manifest.json",
    "manifest.sig",
    "pubkey.pem",
    "verify_export.py",
}
HASHED_FILES = EXPECTED_FILES - {"manifest.json", "manifest.sig"}
EMPTY_ROOT = hashlib.sha256(b"").digest()


class Failure(Exception):
    """One check that did not pass; the message says which and why."""


# RFC 6962 / RFC 9162 hashing and proof verification (the same rules as appliance/audit/merkle.py).


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def compact_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a tree given the roots of its perfect subtrees, largest first."""
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = node_hash(left, root)
    return root


def compact_append(size: int, hashes: list[bytes], leaf: bytes) -> int:
    hashes.append(leaf)
    carried = size
    while carried & 1:
        right = hashes.pop()
        hashes[-1] = node_hash(hashes[-1], right)
        carried >>= 1
    return size + 1


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2."""
    if first < 0 or first > second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof and first_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_root and sr == second_root


# Keys, signatures and signed notes.


def fingerprint_of(public_key: bytes) -> str:
    return "sha256:" + hashlib.sha256(public_key).hexdigest()


def normalise_fingerprint(text: str) -> str:
    value = text.strip().lower().replace(":", "")
    value = value[len("sha256") :] if value.startswith("sha256") else value
    return "sha256:" + value


def signature_ok(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def check_note(note: str, origin: str, tree_size: int, root_hex: str, public_key: bytes) -> None:
    """A C2SP signed note: body lines, a blank line, then ``— <name> base64(key id || sig)``."""
    body, sep, signatures = note.partition("\n\n")
    lines = body.split("\n")
    if not sep or len(lines) < 3:
        raise Failure("the checkpoint note is malformed")
    if lines[0] != origin or lines[1] != str(tree_size):
        raise Failure("the checkpoint note names another log or size than the manifest")
    if base64.b64decode(lines[2]) != bytes.fromhex(root_hex):
        raise Failure("the checkpoint note's root differs from the manifest's")
    key_id = hashlib.sha256(origin.encode() + b"\n\x01" + public_key).digest()[:4]
    for line in signatures.strip("\n").split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "\u2014" or parts[1] != origin:
            continue
        try:
            stamp = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            continue
        if stamp[:4] == key_id and signature_ok(public_key, (body + "\n").encode(), stamp[4:]):
            return
    raise Failure("the checkpoint note has no valid signature by its key")


# The bundle.


MAX_BUNDLE_BYTES = 16 * 1024**3  # uncompressed; refuses a zip bomb before reading it


class Bundle:
    def __init__(self, path: str) -> None:
        try:
            with zipfile.ZipFile(path) as archive:
                infos = archive.infolist()
                names = [info.filename for info in infos]
                if len(names) != len(set(names)):
                    raise Failure("the bundle holds a file name twice")
                missing, extra = EXPECTED_FILES - set(names), set(names) - EXPECTED_FILES
                if missing or extra:
                    raise Failure(
                        f"the bundle's files differ: missing {sorted(missing)}, "
                        f"unexpected {sorted(extra)}"
                    )
                if sum(info.file_size for info in infos) > MAX_BUNDLE_BYTES:
                    raise Failure("the bundle unpacks to more than 16 GiB; refusing to read it")
                self.files = {name: archive.read(name) for name in names}
        except (OSError, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
            raise Failure(f"cannot read the bundle: {exc}") from None
        except (zipfile.BadZipFile, zlib.error) as exc:
            raise Failure(f"the bundle is not an intact zip: {exc}") from None


def load_public_key(pem: bytes) -> bytes:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise Failure("pubkey.pem is not a public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise Failure("pubkey.pem is not an Ed25519 key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def check_events(manifest: dict[str, Any], data: bytes) -> list[bytes]:
    """Leaf hashes of events.jsonl, after checking seq runs first..last without a gap."""
    first, last = manifest["range"]["first_seq"], manifest["range"]["last_seq"]
    if data and not data.endswith(b"\n"):
        raise Failure("events.jsonl does not end with a newline")
    lines = data.split(b"\n")[:-1] if data else []
    if len(lines) != last - first + 1:
        raise Failure(f"events.jsonl has {len(lines)} events; the range needs {last - first + 1}")
    leaves = []
    for expected, line in enumerate(lines, start=first):
        try:
            seq = json.loads(line)["seq"]
        except (ValueError, KeyError, TypeError):
            raise Failure(f"events.jsonl line {expected - first + 1} is not an event") from None
        if seq != expected:
            raise Failure(f"events.jsonl: expected seq {expected}, found {seq} (gap or reorder)")
        leaves.append(leaf_hash(line))
    return leaves


def check_root(manifest: dict[str, Any], leaves: list[bytes]) -> None:
    prefix = manifest["prefix"]
    size, hashes = prefix["size"], [bytes.fromhex(h) for h in prefix["hashes"]]
    if size != manifest["range"]["first_seq"] - 1 or len(hashes) != bin(size).count("1"):
        raise Failure("the manifest's prefix does not fit the range")
    for leaf in leaves:
        size = compact_append(size, hashes, leaf)
    checkpoint = manifest["checkpoint"]
    proof = [bytes.fromhex(h) for h in manifest["range_to_checkpoint"]]
    if not verify_consistency(
        size,
        checkpoint["tree_size"],
        compact_root(hashes),
        bytes.fromhex(checkpoint["root"]),
        proof,
    ):
        raise Failure("the events do not hash to the signed checkpoint's tree")


def verify(path: str, fingerprint: str, say: Any) -> None:
    bundle = Bundle(path)
    say("files", "exactly the expected six files")
    public_key = load_public_key(bundle.files["pubkey.pem"])
    if fingerprint_of(public_key) != normalise_fingerprint(fingerprint):
        raise Failure(f"the bundle's key is {fingerprint_of(public_key)}, not the one you trust")
    say("key", f"pubkey.pem matches {fingerprint_of(public_key)}")
    manifest_bytes = bundle.files["manifest.json"]
    try:
        signature = bytes.fromhex(bundle.files["manifest.sig"].decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise Failure("manifest.sig is not a hex signature") from None
    if not signature_ok(public_key, manifest_bytes, signature):
        raise Failure("manifest.sig is not a valid signature of manifest.json by this key")
    say("manifest", "signed by the trusted key")
    manifest = json.loads(manifest_bytes)
    if manifest.get("format") != FORMAT or manifest.get("key_fingerprint") != fingerprint_of(
        public_key
    ):
        raise Failure("the manifest is of another format or names another signing key")
    listed = manifest["files"]
    if set(listed) != HASHED_FILES:
        raise Failure("the manifest does not list exactly the bundle's files")
    for name in sorted(HASHED_FILES):
        data = bundle.files[name]
        if len(data) != listed[name]["size"] or (
            hashlib.sha256(data).hexdigest() != listed[name]["sha256"]
        ):
            raise Failure(f"{name} differs from the manifest (size or SHA-256)")
    say("file hashes", "every file matches the manifest")
    leaves = check_events(manifest, bundle.files["events.jsonl"])
    first, last = manifest["range"]["first_seq"], manifest["range"]["last_seq"]
    say("sequence", f"events {first}..{last} ({len(leaves)}), contiguous")
    check_root(manifest, leaves)
    checkpoint = manifest["checkpoint"]
    say("merkle", f"consistent with the checkpoint at tree size {checkpoint['tree_size']}")
    keys = {fp: bytes.fromhex(hex_key) for fp, hex_key in manifest["keys"].items()}
    if any(fingerprint_of(key) != fp for fp, key in keys.items()):
        raise Failure("a key listed in the manifest does not match its fingerprint")
    notes = [("checkpoint", checkpoint)]
    previous: dict[str, Any] | None = manifest.get("previous_checkpoint")
    if previous:
        notes.append(("previous checkpoint", previous))
    for label, note in notes:
        key = keys.get(note["key_fingerprint"])
        if key is None:
            raise Failure(f"the {label}'s key is not in the manifest")
        origin = note.get("origin", manifest["origin"])  # a checkpoint signed before a rename
        check_note(note["note"], origin, note["tree_size"], note["root"], key)
    say("checkpoints", "signed notes verify")
    if previous:
        proof = [bytes.fromhex(h) for h in manifest["previous_to_checkpoint"]]
        if not verify_consistency(
            previous["tree_size"],
            checkpoint["tree_size"],
            bytes.fromhex(previous["root"]),
            bytes.fromhex(checkpoint["root"]),
            proof,
        ):
            raise Failure("the previous checkpoint is not consistent with this one")
        say("history", f"extends the checkpoint at tree size {previous['tree_size']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify an appliance audit export bundle.")
    parser.add_argument("bundle", help="the export .zip")
    parser.add_argument(
        "--fingerprint", required=True, help="the signing key's fingerprint, sha256:<hex>"
    )
    args = parser.parse_args(argv)

    def say(check: str, detail: str) -> None:
        print(f"PASS  {check:<12} {detail}")

    try:
        verify(args.bundle, args.fingerprint, say)
    except Failure as failure:
        print(f"FAIL  {failure}")
        print("INVALID: do not rely on this export.")
        return 1
    except (KeyError, TypeError, ValueError) as exc:
        print(f"FAIL  the manifest is malformed ({type(exc).__name__}: {exc})")
        print("INVALID: do not rely on this export.")
        return 1
    print("VALID: the export is complete, unaltered and signed by the trusted key.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
