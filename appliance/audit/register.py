"""The GDPR Art. 30 record of processing activities, generated from what the appliance is actually
configured to keep (retention policies, applications and their data policies), so it cannot drift
from the running system."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from appliance.access.choices import DataPolicy
from appliance.access.models import Application
from appliance.accounts.permissions import Capability, require
from appliance.audit.choices import DataCategory
from appliance.audit.retention import retention_list
from appliance.audit.services import audit_record
from appliance.core.actors import Actor

MEASURES = [
    "Runs inside the organisation's network; no outbound connections (no telemetry, no model hubs).",
    "Prompts and completions not stored unless an application's data policy says so; then AES-256-GCM "
    "under per-subject data keys wrapped by a master key; erasure destroys the key.",
    "Deny-by-default roles; per-application API keys (stored as prefix + SHA-256), grants and limits.",
    "Tamper-evident audit log: RFC 6962 Merkle tree, Ed25519-signed checkpoints, offline-verifiable "
    "exports; daily verification.",
    "Passwords hashed (PBKDF2/Argon2), failed sign-ins throttled; TLS on every hop in production.",
]


@dataclass(frozen=True)
class Activity:
    """One row of the register: a category of data and why and how long it is kept."""

    category: str
    purpose: str
    data_subjects: str
    personal_data: str
    recipients: str
    transfers: str
    retention_days: int
    retention_floor: int
    erasure: str


DESCRIPTIONS: dict[str, dict[str, str]] = {
    DataCategory.CONTENT: {
        "purpose": "Keeping prompts and completions where an application's data policy requires it "
        "(e.g. clinical documentation review).",
        "data_subjects": "Patients or customers named in prompts; staff using the applications.",
        "personal_data": "Free text of prompts and completions, encrypted; subject ids pseudonymised.",
        "erasure": "Per data subject, by destroying the subject's data key (Art. 17).",
    },
    DataCategory.USAGE: {
        "purpose": "Inference log (EU AI Act Art. 12/19), capacity planning, cost allocation, limits.",
        "data_subjects": "Applications and, indirectly, the staff operating them.",
        "personal_data": "Request times, application, API key prefix, model, token counts, status.",
        "erasure": "Purged after the retention period unless under a legal hold.",
    },
    DataCategory.GPU_SAMPLES: {
        "purpose": "Operating the GPU fleet: health, utilisation, temperature and power history.",
        "data_subjects": "None (machine telemetry).",
        "personal_data": "None.",
        "erasure": "Purged after the retention period.",
    },
    DataCategory.AUDIT: {
        "purpose": "Accountability and security (HIPAA 164.312(b), GDPR Art. 5(2) and 32): who did "
        "what, when, from where.",
        "data_subjects": "Staff accounts, applications, nodes; data subjects only as pseudonyms.",
        "personal_data": "User names, source IP addresses, actions; personal identifiers as HMACs.",
        "erasure": "Not erasable (integrity of the record); pseudonymous values only.",
    },
}


def register_build(*, actor: Actor) -> dict[str, Any]:
    """The register as data, and an audit event saying who generated it."""
    require(actor, Capability.AUDIT_VIEW)
    activities = [
        Activity(
            category=r.category,
            recipients="Internal only: the organisation's administrators and auditors.",
            transfers="None: data does not leave the organisation's network.",
            retention_days=r.days,
            retention_floor=r.floor,
            **DESCRIPTIONS[r.category],
        )
        for r in retention_list()
    ]
    keeping = Application.objects.filter(data_policy=DataPolicy.KEEP_ENCRYPTED).order_by("name")
    register = {
        "controller": settings.APPLIANCE_ORGANISATION,
        "generated_at": timezone.now().isoformat(timespec="seconds"),
        "activities": [asdict(a) for a in activities],
        "applications_keeping_content": [
            {"name": a.name, "classification": a.data_classification} for a in keeping
        ],
        "security_measures": MEASURES,
    }
    audit_record(actor=actor, action="compliance.register", object_type="register")
    return register


def register_markdown(register: dict[str, Any]) -> str:
    """The register as a document a data protection officer can file."""
    lines = [
        "# Record of processing activities (GDPR Art. 30)",
        "",
        f"Controller: {register['controller']}  ",
        f"Generated: {register['generated_at']} by the appliance, from its live configuration.",
        "",
        "| Category | Purpose | Data subjects | Personal data | Recipients | Transfers "
        "| Retention (days) | Erasure |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in register["activities"]:
        lines.append(
            f"| {a['category']} | {a['purpose']} | {a['data_subjects']} | {a['personal_data']} "
            f"| {a['recipients']} | {a['transfers']} | {a['retention_days']} "
            f"(floor {a['retention_floor']}) | {a['erasure']} |"
        )
    lines += ["", "## Applications that keep content", ""]
    apps = register["applications_keeping_content"]
    lines += [f"* {a['name']} ({a['classification']})" for a in apps] or ["* none"]
    lines += ["", "## Technical and organisational measures (Art. 32)", ""]
    lines += [f"* {m}" for m in register["security_measures"]]
    return "\n".join(lines) + "\n"
