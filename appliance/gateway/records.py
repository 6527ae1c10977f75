"""Writing what the gateway did: the inference audit event (EU AI Act Art. 12: time, principal,
model and its weights hash, adapter, node, policy version, outcome; never prompt or completion
text) and the usage record. Both are written before the client sees the answer (or, for a stream,
its first chunk); if the audit event cannot be written, the answer is withheld (fail closed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import DatabaseError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from appliance.access.models import ApiKey
from appliance.audit.choices import Outcome
from appliance.audit.services import AuditEntry, audit_record_many
from appliance.core.errors import AuditUnavailable
from appliance.gateway.engines import Engine
from appliance.gateway.models import UsageRecord
from appliance.gateway.principals import Principal
from appliance.gateway.targets import Target
from appliance.privacy.capture import Capture
from appliance.privacy.models import StoredContent

logger = logging.getLogger(__name__)

LAST_USED_EVERY = timedelta(minutes=1)
_last_used_written: dict[int, datetime] = {}


@dataclass
class Inference:
    """One request's facts as the gateway learns them."""

    principal: Principal
    endpoint: str
    requested: str
    stream: bool
    arrived: datetime
    started: float  # time.monotonic() at arrival
    request_id: str = ""  # the id the client sees (its own X-Request-ID, if plain)
    source_ip: str = ""
    finished: float | None = None  # time.monotonic() when the answer was complete
    prompt_estimate: int = 0  # tokens charged if the engine never reports usage
    target: Target | None = None
    engine: Engine | None = None
    attempts: int = 0
    status: int = 0
    error_code: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_at: float | None = None
    content: Capture | None = None  # sealed prompt and completion, where the policy keeps them
    route: str = ""  # the route asked for, if any; then the decision and its reason
    route_version: int = 0
    tier_started: float | None = None  # time.monotonic() when the answering tier was tried
    task_class: str = ""
    route_reason: str = ""
    escalations: list[str] = field(default_factory=list)  # "target: why" of each tier given up

    def latency_ms(self) -> float:
        return ((self.finished or time.monotonic()) - self.started) * 1000

    def ttft_ms(self) -> float | None:
        if self.first_token_at is None:
            return None
        return (self.first_token_at - self.started) * 1000


def _details(inference: Inference) -> dict[str, object]:
    target, engine = inference.target, inference.engine
    return {
        "endpoint": inference.endpoint,
        "model": target.model_name if target else inference.requested[:100],
        "model_sha256": target.model_digest if target else "",
        "adapter": target.adapter_name if target else "",
        "adapter_sha256": target.adapter_digest if target else "",
        "node": engine.node if engine else "",
        "engine": engine.instance if engine else "",
        "deployment": engine.deployment if engine else "",
        "api_key": inference.principal.key_prefix,
        "policy_version": inference.principal.policy_version,
        "stream": inference.stream,
        "status": inference.status,
        "error_code": inference.error_code,
        **_routing(inference),
    }


def _routing(inference: Inference) -> dict[str, object]:
    """The route's decision, on the events of routed requests only."""
    if not inference.route:
        return {}
    return {
        "route": inference.route,
        "route_version": inference.route_version,
        "task_class": inference.task_class,
        "route_reason": inference.route_reason,
        "target": inference.target.name if inference.target else "",
        "fallbacks": inference.escalations,
    }


def _outcome(status: int) -> str:
    if status < 400:
        return Outcome.SUCCESS
    if status in (403, 404):
        return Outcome.DENIED
    return Outcome.FAILURE


def _audit_entry(inference: Inference) -> AuditEntry:
    """The Art. 12 event of this inference."""
    return AuditEntry(
        actor=inference.principal.actor(),
        action="inference",
        object_type="model",
        object_id=inference.target.model_id if inference.target else "",
        outcome=_outcome(inference.status),
        details=_details(inference),
        request_id=inference.request_id,
        source_ip=inference.source_ip,
    )


def _usage_row(inference: Inference) -> UsageRecord:
    target, engine = inference.target, inference.engine
    principal = inference.principal
    return UsageRecord(
        time=inference.arrived,
        request_id=inference.request_id,
        application_id=principal.application_id,
        api_key_id=principal.key_id,
        endpoint=inference.endpoint,
        model=(target.model_name if target else inference.requested)[:100],
        adapter=target.adapter_name if target else "",
        node=engine.node if engine else "",
        engine=engine.instance if engine else "",
        stream=inference.stream,
        status=inference.status,
        error_code=inference.error_code[:40],
        prompt_tokens=max(0, inference.prompt_tokens),
        completion_tokens=max(0, inference.completion_tokens),
        latency_ms=inference.latency_ms(),
        ttft_ms=inference.ttft_ms(),
        attempts=inference.attempts,
        deployment=engine.deployment if engine else "",
        route=inference.route,
        task_class=inference.task_class,
        route_reason=inference.route_reason[:100],
        fallbacks=len(inference.escalations),
    )


def _touch_key(key_id: int) -> None:
    """``last_used_at`` at most once a minute per key and process: cheap, and close enough."""
    now = timezone.now()
    last = _last_used_written.get(key_id)
    if last is not None and now - last < LAST_USED_EVERY:
        return
    _last_used_written[key_id] = now
    ApiKey.objects.filter(pk=key_id).update(last_used_at=now)


def records_write(entries: list[tuple[Inference, bool, bool]]) -> None:
    """Usage records (first flag), with the kept content of requests that have it, and audit
    events (second flag) of several requests in one transaction: a group commit, one insert of
    each for everything that ended together.
    Raises AuditUnavailable, with nothing written, if any of it cannot be. The audit events go
    last: they take the audit sequence's lock, held until commit."""
    try:
        with transaction.atomic():
            rows: list[UsageRecord] = []
            kept: list[tuple[UsageRecord, Capture]] = []
            for inference, usage, _ in entries:
                if usage:
                    rows.append(_usage_row(inference))
                    if inference.content is not None:
                        kept.append((rows[-1], inference.content))
            UsageRecord.objects.bulk_create(rows)
            if kept:  # content, with its usage record (bulk_create gave the rows their ids)
                StoredContent.objects.bulk_create(
                    [content for row, capture in kept for content in capture.rows(row)]
                )
            for key_id in {row.api_key_id for row in rows}:
                _touch_key(key_id)
            events = [_audit_entry(inference) for inference, _, audit in entries if audit]
            if events:
                audit_record_many(events)
    except DatabaseError as exc:
        logger.error("gateway records not written: %s", type(exc).__name__)
        raise AuditUnavailable("The audit log cannot be written right now.") from exc


def month_tokens(application_id: int, month_start: datetime) -> int:
    """Tokens an application used since the month began: the seed for its budget counter."""
    total = UsageRecord.objects.filter(
        application_id=application_id, time__gte=month_start
    ).aggregate(total=Sum(F("prompt_tokens") + F("completion_tokens")))["total"]
    return int(total or 0)
