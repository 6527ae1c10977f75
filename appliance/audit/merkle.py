"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification.

Pure functions over raw 32-byte hashes, free of Django. Proof generation asks a ``Perfect``
callable for the hash of an aligned perfect subtree (``start`` a multiple of ``size``, ``size`` a
power of two), so the same code runs over an in-memory list of leaves (tests) and over the stored
leaf hashes and tiles (the database). Verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2
and is mirrored, line for line, in the standalone ``compliance/verify_export.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

Perfect = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof that was asked for sizes or indexes the tree cannot have."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2): where RFC 6962 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """Root of a perfect subtree (len a power of two) given its leaf hashes, bottom-up."""
    level = list(leaves)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def range_hash(start: int, end: int, perfect: Perfect) -> bytes:
    """MTH of the leaves [start, end), where ``start`` is aligned as RFC 6962's recursion makes it."""
    n = end - start
    if n == 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0:
        return perfect(start, n)
    k = split_point(n)
    return node_hash(perfect(start, k), range_hash(start + k, end, perfect))


def inclusion_proof(index: int, size: int, perfect: Perfect) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:size]), leaf side first."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            path.append(range_hash(start + k, end, perfect))
            end = start + k
        else:
            path.append(perfect(start, k))
            start += k
    path.reverse()
    return path


def consistency_proof(first: int, second: int, perfect: Perfect) -> list[bytes]:
    """RFC 6962 PROOF(first, D[0:second])."""
    if not 0 <= first <= second:
        raise ProofError(f"no consistency proof from size {first} to size {second}")
    if first in (0, second):
        return []
    proof: list[bytes] = []
    start, end, m, complete = 0, second, first, True
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            proof.append(range_hash(start + k, end, perfect))
            end = start + k
        else:
            proof.append(perfect(start, k))
            start, m, complete = start + k, m - k, False
    if not complete:
        proof.append(range_hash(start, end, perfect))
    proof.reverse()
    return proof


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: whether ``leaf`` is at ``index`` in the tree of ``size`` with ``root``."""
    if index >= size or index < 0:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: whether the tree of ``second`` leaves extends the one of ``first``."""
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


class Frontier:
    """The compact range [0, size): roots of the perfect subtrees that size decomposes into, largest
    first. Appending a leaf and taking the root are O(log n), so checkpoints never rehash history."""

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self.size = size
        self.hashes = list(hashes)
        if len(self.hashes) != size.bit_count():
            raise ValueError(f"a frontier of size {size} has {size.bit_count()} hashes")

    def append(self, leaf: bytes) -> None:
        self.hashes.append(leaf)
        carried, self.size = self.size, self.size + 1
        while carried & 1:  # merge equal-sized subtrees, as binary addition carries
            right = self.hashes.pop()
            self.hashes[-1] = node_hash(self.hashes[-1], right)
            carried >>= 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        root = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            root = node_hash(left, root)
        return root

    def copy(self) -> Frontier:
        return Frontier(self.size, self.hashes)


def list_perfect(leaves: Sequence[bytes]) -> Perfect:
    """A ``Perfect`` over leaf hashes held in memory."""
    return lambda start, size: perfect_from_leaves(leaves[start : start + size])
