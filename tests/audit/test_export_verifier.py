"""The checks of compliance/verify_export.py below the file hashes, called on mutated manifests
and event files: an attacker without the appliance's key cannot re-sign a manifest, so these
mutations cannot reach the verifier through a bundle, but the checks must hold on their own."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from types import ModuleType

import pytest

from appliance.audit.canonical import canonical_bytes
from tests.audit.bundles import (
    Built,
    event_lines,
    forged_next,
    jsonl,
    load_verifier,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def verifier() -> ModuleType:
    return load_verifier()


def leaves_of(verifier: ModuleType, built: Built) -> list[bytes]:
    leaves: list[bytes] = verifier.check_events(built.manifest, built.files["events.jsonl"])
    return leaves


def flip_bit(hex_hash: str, bit: int) -> str:
    raw = bytearray(bytes.fromhex(hex_hash))
    raw[bit // 8] ^= 1 << (bit % 8)
    return raw.hex()


def test_genuine_range_passes_the_root_check(verifier: ModuleType, ranged_export: Built) -> None:
    verifier.check_root(ranged_export.manifest, leaves_of(verifier, ranged_export))


@pytest.mark.parametrize("bit", [0, 255])
def test_flipped_bit_in_any_range_to_checkpoint_hash_fails(
    verifier: ModuleType, ranged_export: Built, bit: int
) -> None:
    leaves = leaves_of(verifier, ranged_export)
    for index in range(len(ranged_export.manifest["range_to_checkpoint"])):
        mutated = copy.deepcopy(ranged_export.manifest)
        proof = mutated["range_to_checkpoint"]
        proof[index] = flip_bit(proof[index], bit)
        with pytest.raises(verifier.Failure, match="do not hash to the signed checkpoint's tree"):
            verifier.check_root(mutated, leaves)


@pytest.mark.parametrize("bit", [0, 255])
def test_flipped_bit_in_any_prefix_hash_fails(
    verifier: ModuleType, ranged_export: Built, bit: int
) -> None:
    leaves = leaves_of(verifier, ranged_export)
    for index in range(len(ranged_export.manifest["prefix"]["hashes"])):
        mutated = copy.deepcopy(ranged_export.manifest)
        hashes = mutated["prefix"]["hashes"]
        hashes[index] = flip_bit(hashes[index], bit)
        with pytest.raises(verifier.Failure, match="do not hash to the signed checkpoint's tree"):
            verifier.check_root(mutated, leaves)


def test_removed_or_inserted_range_proof_element_fails(
    verifier: ModuleType, ranged_export: Built
) -> None:
    leaves = leaves_of(verifier, ranged_export)
    proof = ranged_export.manifest["range_to_checkpoint"]
    variants = [proof[1:], proof[:-1], [proof[0], *proof], [*proof, proof[-1]]]
    for variant in variants:
        mutated = copy.deepcopy(ranged_export.manifest)
        mutated["range_to_checkpoint"] = variant
        with pytest.raises(verifier.Failure, match="do not hash to the signed checkpoint's tree"):
            verifier.check_root(mutated, leaves)


def test_prefix_with_a_hash_missing_or_the_wrong_size_does_not_fit_the_range(
    verifier: ModuleType, ranged_export: Built
) -> None:
    leaves = leaves_of(verifier, ranged_export)
    missing = copy.deepcopy(ranged_export.manifest)
    missing["prefix"]["hashes"].pop()
    resized = copy.deepcopy(ranged_export.manifest)
    resized["prefix"]["size"] += 1
    for mutated in (missing, resized):
        with pytest.raises(verifier.Failure, match="the manifest's prefix does not fit the range"):
            verifier.check_root(mutated, leaves)


def test_changed_event_bytes_do_not_hash_to_the_checkpoint(
    verifier: ModuleType, ranged_export: Built
) -> None:
    lines = event_lines(ranged_export.files)
    lines[4] = lines[4].replace(b"event number", b"event numbe_")
    leaves = verifier.check_events(ranged_export.manifest, jsonl(lines))
    with pytest.raises(verifier.Failure, match="do not hash to the signed checkpoint's tree"):
        verifier.check_root(ranged_export.manifest, leaves)


def test_sequence_check_names_gaps_reorders_and_counts(
    verifier: ModuleType, ranged_export: Built
) -> None:
    lines = event_lines(ranged_export.files)
    first = ranged_export.manifest["range"]["first_seq"]
    deleted = lines[:3] + lines[4:]
    swapped = [*lines[:2], lines[3], lines[2], *lines[4:]]
    appended = [*lines, forged_next(lines)]
    skipped = [*lines[:-1], canonical_bytes({**json.loads(lines[-1]), "seq": first + len(lines)})]
    cases = [
        (deleted, f"events.jsonl has {len(lines) - 1} events; the range needs {len(lines)}"),
        (swapped, f"expected seq {first + 2}, found {first + 3} (gap or reorder)"),
        (appended, f"events.jsonl has {len(lines) + 1} events; the range needs {len(lines)}"),
        (skipped, f"expected seq {first + len(lines) - 1}, found {first + len(lines)}"),
        ([*lines[:1], b"not json", *lines[2:]], "events.jsonl line 2 is not an event"),
    ]
    for data, message in cases:
        with pytest.raises(verifier.Failure) as failure:
            verifier.check_events(ranged_export.manifest, jsonl(data))
        assert message in str(failure.value)
    with pytest.raises(verifier.Failure, match="does not end with a newline"):
        verifier.check_events(ranged_export.manifest, jsonl(lines)[:-1])


@pytest.mark.parametrize("bit", [0, 255])
def test_flipped_bit_in_the_previous_checkpoint_proof_fails(
    verifier: ModuleType, ranged_export: Built, bit: int
) -> None:
    manifest = ranged_export.manifest
    previous, checkpoint = manifest["previous_checkpoint"], manifest["checkpoint"]
    proof = manifest["previous_to_checkpoint"]

    def consistent(hexes: list[str]) -> bool:
        return bool(
            verifier.verify_consistency(
                previous["tree_size"],
                checkpoint["tree_size"],
                bytes.fromhex(previous["root"]),
                bytes.fromhex(checkpoint["root"]),
                [bytes.fromhex(h) for h in hexes],
            )
        )

    assert consistent(proof)
    for index in range(len(proof)):
        mutated = list(proof)
        mutated[index] = flip_bit(mutated[index], bit)
        assert not consistent(mutated)


def test_checkpoint_note_with_a_flipped_signature_bit_fails(
    verifier: ModuleType, ranged_export: Built
) -> None:
    manifest = ranged_export.manifest
    checkpoint = manifest["checkpoint"]
    key = bytes.fromhex(manifest["keys"][checkpoint["key_fingerprint"]])
    args = (manifest["origin"], checkpoint["tree_size"], checkpoint["root"], key)
    verifier.check_note(checkpoint["note"], *args)

    body, _, signature_line = checkpoint["note"].partition("\n\n")
    dash, name, stamp = signature_line.strip("\n").split(" ")
    raw = bytearray(base64.b64decode(stamp))
    raw[10] ^= 0x01
    forged = f"{body}\n\n{dash} {name} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(verifier.Failure, match="no valid signature by its key"):
        verifier.check_note(forged, *args)


def test_a_corrupt_or_truncated_zip_is_a_named_failure_not_a_traceback(
    verifier: ModuleType, tmp_path: Path
) -> None:
    truncated = tmp_path / "cut.zip"
    truncated.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(verifier.Failure, match=r"not an intact zip|cannot read"):
        verifier.Bundle(str(truncated))
