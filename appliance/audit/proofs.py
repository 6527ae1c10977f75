"""Inclusion and consistency proofs over the signed part of the log, for auditors and witnesses.

Proofs are only given up to the latest checkpoint's size. A root at a checkpoint's size is the
signed one; a root at any other size is computed, and a consistency proof from it to a checkpoint
is what ties it to a signature.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from appliance.accounts.permissions import Capability, require
from appliance.audit.checkpoints import checkpoint_latest
from appliance.audit.merkle import consistency_proof, inclusion_proof, range_hash
from appliance.audit.models import AuditEvent
from appliance.audit.tree import StoredTree, TreeGap
from appliance.core.actors import Actor
from appliance.core.errors import Conflict, ValidationFailed


@dataclass(frozen=True)
class InclusionProof:
    seq: int
    leaf_index: int
    leaf_hash: str
    tree_size: int
    root: str
    proof: list[str]


@dataclass(frozen=True)
class ConsistencyProof:
    first: int
    second: int
    first_root: str
    second_root: str
    proof: list[str]


@contextmanager
def _whole_log() -> Iterator[None]:
    """A proof over events that are gone is a conflict with the log's state, not a crash."""
    try:
        yield
    except (TreeGap, AuditEvent.DoesNotExist):
        raise Conflict(
            "Events this proof needs are missing from the log; run `manage.py audit verify`.",
            code="log_incomplete",
        ) from None


def _signed_size(actor: Actor, size: int | None, field: str) -> int:
    """``size`` (or the latest signed size), refused if beyond the latest checkpoint."""
    require(actor, Capability.AUDIT_VIEW)
    latest = checkpoint_latest()
    signed = latest.tree_size if latest else 0
    if size is None:
        return signed
    if not 0 <= size <= signed:
        raise ValidationFailed(
            f"No signed tree of size {size}; the latest checkpoint has {signed} events.",
            fields={field: [f"Must be between 0 and {signed}."]},
        )
    return size


def audit_inclusion_proof(*, actor: Actor, seq: int, tree_size: int | None) -> InclusionProof:
    """The audit path from event ``seq`` to the root of the tree of ``tree_size`` events."""
    size = _signed_size(actor, tree_size, "tree_size")
    if not 1 <= seq <= size:
        raise ValidationFailed(
            f"Event {seq} is not in the signed tree of size {size}.",
            fields={"seq": [f"Must be between 1 and {size}."]},
        )
    tree = StoredTree()
    with _whole_log():
        leaf = AuditEvent.objects.values_list("leaf_hash", flat=True).get(seq=seq)
        return InclusionProof(
            seq=seq,
            leaf_index=seq - 1,
            leaf_hash=leaf,
            tree_size=size,
            root=range_hash(0, size, tree).hex(),
            proof=[h.hex() for h in inclusion_proof(seq - 1, size, tree)],
        )


def audit_consistency_proof(*, actor: Actor, first: int, second: int | None) -> ConsistencyProof:
    """The proof that the tree of ``second`` events extends the one of ``first``."""
    size = _signed_size(actor, second, "second")
    if not 0 <= first <= size:
        raise ValidationFailed(
            f"No consistency proof from size {first} to size {size}.",
            fields={"first": [f"Must be between 0 and {size}."]},
        )
    tree = StoredTree()
    with _whole_log():
        return ConsistencyProof(
            first=first,
            second=size,
            first_root=range_hash(0, first, tree).hex(),
            second_root=range_hash(0, size, tree).hex(),
            proof=[h.hex() for h in consistency_proof(first, size, tree)],
        )
