"""RFC 6962 hashing, proofs and their verification: known answers and the mutation cases."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from appliance.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    list_perfect,
    range_hash,
    verify_consistency,
    verify_inclusion,
)

# The inputs and roots of the RFC 6962 reference tests (certificate-transparency, merkle_tree_test).
INPUTS = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
LEAVES = [leaf_hash(bytes.fromhex(x)) for x in INPUTS]
PERFECT = list_perfect(LEAVES)


def tree(n: int) -> tuple[list[bytes], bytes]:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    return leaves, range_hash(0, n, list_perfect(leaves))


def test_empty_tree_and_empty_leaf_known_answers() -> None:
    assert EMPTY_ROOT.hex().startswith("e3b0c442") and EMPTY_ROOT.hex().endswith("b855")
    assert leaf_hash(b"").hex().startswith("6e340b9c")
    assert range_hash(0, 0, PERFECT) == EMPTY_ROOT == Frontier().root()


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_rfc6962_reference_vectors(size: int) -> None:
    assert range_hash(0, size, PERFECT).hex() == ROOTS[size - 1]
    frontier = Frontier()
    frontier.extend(LEAVES[:size])
    assert frontier.root().hex() == ROOTS[size - 1]


def test_reference_inclusion_and_consistency_proofs() -> None:
    # From the reference tests: leaf 0 of the 8-leaf tree, and consistency 1 -> 8, 6 -> 8, 2 -> 5.
    assert [h.hex()[:8] for h in inclusion_proof(0, 8, PERFECT)] == [
        "96a296d2",
        "5f083f0a",
        "6b47aaf2",
    ]
    assert [h.hex()[:8] for h in consistency_proof(1, 8, PERFECT)] == [
        "96a296d2",
        "5f083f0a",
        "6b47aaf2",
    ]
    assert [h.hex()[:8] for h in consistency_proof(6, 8, PERFECT)] == [
        "0ebc5d34",
        "ca854ea1",
        "d37ee418",
    ]
    assert [h.hex()[:8] for h in consistency_proof(2, 5, PERFECT)] == ["5f083f0a", "bc1a0643"]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 13, 16, 31, 64])
def test_every_inclusion_and_consistency_proof_verifies(size: int) -> None:
    leaves, root = tree(size)
    perfect = list_perfect(leaves)
    for index in range(size):
        assert verify_inclusion(
            leaves[index], index, size, inclusion_proof(index, size, perfect), root
        )
    for first in range(size + 1):
        first_root = range_hash(0, first, perfect)
        proof = consistency_proof(first, size, perfect)
        assert verify_consistency(first, size, first_root, root, proof)


def _flips(proof: list[bytes]) -> list[list[bytes]]:
    """The proof with one bit flipped in each element in turn (a different bit each time)."""
    out = []
    for i, element in enumerate(proof):
        changed = bytearray(element)
        changed[(i * 7) % len(changed)] ^= 1 << (i % 8)
        out.append([*proof[:i], bytes(changed), *proof[i + 1 :]])
    return out


@pytest.mark.parametrize(("index", "size"), [(0, 1), (0, 8), (5, 8), (6, 7), (12, 13), (20, 31)])
def test_mutated_inclusion_proofs_fail(index: int, size: int) -> None:
    leaves, root = tree(size)
    proof = inclusion_proof(index, size, list_perfect(leaves))
    leaf = leaves[index]
    assert verify_inclusion(leaf, index, size, proof, root)
    wrong = [
        (leaf, index + 1, size, proof),
        (leaf, index - 1, size, proof),
        (leaf, index, size * 2, proof),
        (leaf, index, size // 2, proof),
        (leaf_hash(b"forged"), index, size, proof),
        (leaf, index, size, [*proof, leaf]),  # inserted element
        (leaf, index, size, [leaf, *proof]),
    ]
    if proof:
        wrong.append((leaf, index, size, proof[:-1]))  # removed element
        wrong.append((leaf, index, size, proof[1:]))
        wrong += [(leaf, index, size, flipped) for flipped in _flips(proof)]
    for args in wrong:
        assert not verify_inclusion(*args, root), args[1:3]


@pytest.mark.parametrize(
    ("first", "second"), [(1, 2), (1, 8), (3, 8), (6, 8), (2, 5), (7, 13), (16, 31)]
)
def test_mutated_consistency_proofs_fail(first: int, second: int) -> None:
    leaves, root = tree(second)
    perfect = list_perfect(leaves)
    first_root = range_hash(0, first, perfect)
    proof = consistency_proof(first, second, perfect)
    assert verify_consistency(first, second, first_root, root, proof)
    wrong = [
        (first + 1, second, first_root, root, proof),
        (first - 1, second, first_root, root, proof),
        (first, second * 2, first_root, root, proof),
        (first, second // 2, first_root, root, proof),
        (first, second, leaf_hash(b"x"), root, proof),
        (first, second, first_root, leaf_hash(b"x"), proof),
        (first, second, first_root, root, [*proof, root]),
        (first, second, first_root, root, [root, *proof]),
        (first, second, first_root, root, proof[:-1]),
        (first, second, first_root, root, proof[1:]),
    ]
    wrong += [(first, second, first_root, root, flipped) for flipped in _flips(proof)]
    for args in wrong:
        assert not verify_consistency(*args), args[:2]


def test_proofs_of_impossible_positions_are_refused() -> None:
    with pytest.raises(ProofError):
        inclusion_proof(8, 8, PERFECT)
    with pytest.raises(ProofError):
        consistency_proof(5, 4, PERFECT)
    assert not verify_inclusion(LEAVES[0], 0, 0, [], EMPTY_ROOT)


def test_frontier_appends_incrementally_to_the_same_roots() -> None:
    leaves, _ = tree(100)
    frontier = Frontier()
    perfect = list_perfect(leaves)
    for n, leaf in enumerate(leaves, start=1):
        frontier.append(leaf)
        assert frontier.size == n
        assert len(frontier.hashes) == n.bit_count()
        assert frontier.root() == range_hash(0, n, perfect)
    with pytest.raises(ValueError, match="has"):
        Frontier(3, frontier.hashes[:1])


def _standalone_verifier() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "compliance" / "verify_export.py"
    spec = importlib.util.spec_from_file_location("verify_export", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_standalone_verifier_agrees_with_the_appliance_on_every_proof() -> None:
    verifier = _standalone_verifier()
    for second in range(1, 24):
        leaves, root = tree(second)
        perfect = list_perfect(leaves)
        for first in range(second + 1):
            first_root = range_hash(0, first, perfect)
            proof = consistency_proof(first, second, perfect)
            assert verifier.verify_consistency(first, second, first_root, root, proof)
            mutated = _flips(proof)
            for bad in mutated:
                assert not verifier.verify_consistency(first, second, first_root, root, bad)
        hashes: list[bytes] = []
        size = 0
        for leaf in leaves:
            size = verifier.compact_append(size, hashes, leaf)
        assert verifier.compact_root(hashes) == root
