"""Recomputing the whole log against its signed checkpoints, CloudTrail style.

Every event's leaf is recomputed from its row and compared with the leaf stored when it was
written (naming each changed event); ``seq`` must run 1, 2, 3... (naming each gap); each
checkpoint's signature must verify and its root must equal the root recomputed at its size (naming
checkpoints the log no longer matches, which catches rows rewritten together with their leaf
hash, reordered or removed); stored tiles and consistency proofs are checked on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from appliance.accounts.permissions import Capability, require
from appliance.audit.checkpoints import checkpoint_signature_valid
from appliance.audit.choices import Outcome
from appliance.audit.leaves import leaf_runs
from appliance.audit.merkle import Frontier, perfect_from_leaves, verify_consistency
from appliance.audit.models import AuditCheckpoint, AuditSequence, AuditTile, AuditVerification
from appliance.audit.services import audit_record
from appliance.audit.tree import TILE
from appliance.core.actors import Actor

MAX_LISTED_PROBLEMS = 1000


@dataclass
class Findings:
    """Problems in the order found; the first MAX_LISTED_PROBLEMS are kept, all are counted."""

    listed: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, problem: str) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED_PROBLEMS:
            self.listed.append(problem)


def _check_checkpoint_chain(checkpoints: list[AuditCheckpoint], findings: Findings) -> None:
    by_id = {c.pk: c for c in checkpoints}
    for checkpoint in checkpoints:
        name = f"checkpoint {checkpoint.pk} (size {checkpoint.tree_size})"
        if not checkpoint_signature_valid(checkpoint):
            findings.add(f"{name} has a bad signature.")
        previous = by_id.get(checkpoint.previous_id) if checkpoint.previous_id else None
        if previous is None:
            continue
        proof = [bytes.fromhex(h) for h in checkpoint.consistency]
        if not verify_consistency(
            previous.tree_size,
            checkpoint.tree_size,
            bytes.fromhex(previous.root),
            bytes.fromhex(checkpoint.root),
            proof,
        ):
            findings.add(
                f"{name} is not consistent with checkpoint {previous.pk} "
                f"(size {previous.tree_size}) before it."
            )


class _Walk:
    """One pass over the events, comparing against checkpoints and tiles as sizes are reached."""

    def __init__(self, checkpoints: list[AuditCheckpoint], findings: Findings) -> None:
        self.findings = findings
        self.frontier = Frontier()
        self.pending: list[bytes] = []
        self.tiles = dict(AuditTile.objects.values_list("index", "hash"))
        self.checkpoints = sorted(checkpoints, key=lambda c: (c.tree_size, c.pk))
        self.next_checkpoint = 0
        self.broken_from: int | None = None  # first seq of a gap; roots after it cannot match

    def run(self, upto: int, workers: int | None) -> None:
        self._reach_checkpoints()
        for run in leaf_runs(upto, workers=workers):
            for index, seq in enumerate(run.seqs):
                expected = self.frontier.size + 1
                if seq != expected:
                    self._gap(expected, seq)
                if seq in run.changed:
                    self.findings.add(f"event {seq} was changed: {run.changed[seq]}.")
                leaf = bytes(run.leaves[32 * index : 32 * index + 32])
                self.frontier.append(leaf)
                self._tile(leaf)
                self._reach_checkpoints()
        for checkpoint in self.checkpoints[self.next_checkpoint :]:
            self.findings.add(
                f"checkpoint {checkpoint.pk} covers {checkpoint.tree_size} events but the log "
                f"holds {self.frontier.size}: events {self.frontier.size + 1}.."
                f"{checkpoint.tree_size} were removed."
            )

    def _gap(self, expected: int, seq: int) -> None:
        self.findings.add(f"events {expected}..{seq - 1} are missing.")
        self.broken_from = self.broken_from or expected
        self.frontier = Frontier(seq - 1, [b""] * (seq - 1).bit_count())
        self._reach_checkpoints()  # those whose size fell inside the gap cannot be matched
        self.pending = []

    def _tile(self, leaf: bytes) -> None:
        """Compare each full tile with the one stored when it was checkpointed (after a gap, the
        partial tile is not compared)."""
        self.pending.append(leaf)
        if self.frontier.size % TILE:
            return
        index = self.frontier.size // TILE - 1
        stored = self.tiles.get(index)
        if (
            len(self.pending) == TILE
            and stored is not None
            and stored != perfect_from_leaves(self.pending).hex()
        ):
            first = index * TILE + 1
            self.findings.add(
                f"events {first}..{first + TILE - 1} differ from when they were checkpointed "
                f"(tile {index})."
            )
        self.pending = []

    def _reach_checkpoints(self) -> None:
        while (
            self.next_checkpoint < len(self.checkpoints)
            and self.checkpoints[self.next_checkpoint].tree_size <= self.frontier.size
        ):
            checkpoint = self.checkpoints[self.next_checkpoint]
            self.next_checkpoint += 1
            if self.broken_from is not None or checkpoint.tree_size < self.frontier.size:
                self.findings.add(
                    f"checkpoint {checkpoint.pk} (size {checkpoint.tree_size}) cannot be matched: "
                    f"events from {self.broken_from} are missing."
                )
            elif self.frontier.root().hex() != checkpoint.root:
                self.findings.add(
                    f"checkpoint {checkpoint.pk} (size {checkpoint.tree_size}) does not match the "
                    "log: an event at or before that size was changed, reordered or removed."
                )


def audit_verify(*, actor: Actor, workers: int | None = None) -> AuditVerification:
    """Verify everything, store the result (shown in the console) and audit that it ran.
    ``workers``: processes recomputing leaves (default: one per core, for large logs)."""
    require(actor, Capability.AUDIT_EXPORT)
    started = timezone.now()
    findings = Findings()
    checkpoints = list(AuditCheckpoint.objects.select_related("key"))
    _check_checkpoint_chain(checkpoints, findings)
    # Read the counter first: events committed while the walk runs are not this run's to judge.
    issued = AuditSequence.objects.values_list("value", flat=True).get(pk=1)
    walk = _Walk(checkpoints, findings)
    walk.run(issued, workers)
    if issued > walk.frontier.size:
        findings.add(
            f"events {walk.frontier.size + 1}..{issued} were issued but are not in the log."
        )
    with transaction.atomic():
        result = AuditVerification.objects.create(
            started_at=started,
            finished_at=timezone.now(),
            valid=findings.count == 0,
            events_checked=walk.frontier.size,
            checkpoints_checked=len(checkpoints),
            tree_size=walk.frontier.size,
            root="" if walk.broken_from else walk.frontier.root().hex(),
            problems=findings.listed,
            problem_count=findings.count,
        )
        audit_record(
            actor=actor,
            action="audit.verify",
            object_type="audit_verification",
            object_id=result.pk,
            outcome=Outcome.SUCCESS if result.valid else Outcome.FAILURE,
            details={"tree_size": result.tree_size, "problems": result.problem_count},
        )
    return result
