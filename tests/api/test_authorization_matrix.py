"""Who may call what: one row per operation of the management API, checked for every persona.

MATRIX is keyed by (METHOD, path template as in the OpenAPI schema). A route added without a row
fails ``test_matrix_covers_exactly_the_operations_in_the_schema``. Every call sends a valid body
and real object ids, so a 422 or 404 cannot hide a missing permission check: an allowed role gets
the operation's success status, anonymous callers 401, and other roles 403 (or 404 where the object
is someone else's and must look missing).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from appliance.access import services as access
from appliance.access.models import ApiKey, Application, Grant
from appliance.accounts import mfa
from appliance.accounts.models import ApiToken, BreakGlass, User
from appliance.accounts.services import token_create
from appliance.api.v1 import api
from appliance.audit.breaches import breach_record
from appliance.audit.checkpoints import checkpoint_latest
from appliance.audit.exports import audit_export_build, audit_export_request
from appliance.audit.models import AuditEvent, AuditExport
from appliance.audit.retention import legal_hold_place
from appliance.core.actors import system_actor
from appliance.core.models import Job
from appliance.fleet import services as fleet
from appliance.fleet.deployments import deployment_create
from appliance.fleet.heartbeats import node_heartbeat
from appliance.fleet.models import Deployment, EnrollmentToken, Gpu, Node
from appliance.registry import services as registry
from appliance.registry.choices import EntryStatus
from appliance.registry.models import Adapter, BaseModel
from appliance.routing import services as routing
from appliance.routing.choices import EvaluationStatus
from appliance.routing.costs import cost_model_set, reference_price_save
from appliance.routing.evaluations import evaluation_set_create
from appliance.routing.models import (
    CostModel,
    Evaluation,
    EvaluationSet,
    ReferencePrice,
    Route,
    TaskClass,
)
from tests.conftest import PASSWORD, ApiClient, actor, fresh_code, make_user, with_authenticator
from tests.fleet.conftest import gpu_reading
from tests.privacy.conftest import store_exchange
from tests.support import write_adapter_dir, write_model_dir

pytestmark = pytest.mark.django_db

ADMIN, OPERATOR, AUDITOR, APP_OWNER = "admin", "operator", "auditor", "app_owner"
ANONYMOUS = "anonymous"
ROLES = (ADMIN, OPERATOR, AUDITOR, APP_OWNER)
PERSONAS = (*ROLES, ANONYMOUS)
EVERYONE = frozenset(ROLES)
NEW_PASSWORD = "a brand new passphrase for the matrix 7"


@dataclass
class World:
    """Real objects for every path parameter, and the persona calling."""

    persona: str
    user: User | None  # the persona's account (None when anonymous)
    pending_model: BaseModel  # imported by bob, waiting for approval
    approved_model: BaseModel  # imported by bob, approved by alice
    pending_adapter: Adapter  # imported by bob on approved_model, waiting for approval
    target_user: User  # an active account that is not the persona
    inactive_user: User
    spare_token: ApiToken  # the persona's own (bob's for anonymous), not the one calling
    job: Job
    event: AuditEvent
    import_root: Path
    archive: bytes  # a .tar.gz of a LoRA adapter for approved_model
    node: Node  # enrolled, online, two 80 GiB GPUs, one of them taken by ``deployment``
    gpu: Gpu  # a GPU of ``node`` with one raw sample
    enrollment_token: EnrollmentToken  # unused, usable
    deployment: Deployment  # active, one engine on ``node``, serving ``approved_model``
    application: Application  # owned by the app owner persona (owen), with a key and a grant
    api_key: ApiKey  # a live key of ``application``
    grant: Grant  # ``application`` may use ``approved_model``
    ungranted_application: Application  # owen's too, with no grants yet
    task_class: TaskClass  # "general", with example prompts; ``route`` uses it
    route: Route  # "matrix-route": general → approved_model; granted to no one
    reference_price: ReferencePrice  # the default one
    cost_model: CostModel  # ``deployment``'s: a set price per million tokens
    evaluation_set: EvaluationSet  # no evaluation has run on it yet
    evaluation: Evaluation  # finished on another set; approved_model met the target
    export: AuditExport  # a finished audit export bundle, built last (its checkpoint covers all)

    def path_values(self) -> dict[str, Any]:
        return {
            "model_id": self.pending_model.pk,
            "adapter_id": self.pending_adapter.pk,
            "user_id": self.target_user.pk,
            "token_id": self.spare_token.pk,
            "job_id": self.job.pk,
            "seq": self.event.seq,
            "node_id": self.node.pk,
            "gpu_id": self.gpu.pk,
            "deployment_id": self.deployment.pk,
            "application_id": self.application.pk,
            "key_id": self.api_key.pk,
            "grant_id": self.grant.pk,
            "export_id": self.export.pk,
            "task_class_id": self.task_class.pk,
            "route_id": self.route.pk,
            "price_id": self.reference_price.pk,
            "set_id": self.evaluation_set.pk,
            "evaluation_id": self.evaluation.pk,
        }


Body = Callable[[World], Any]


@dataclass(frozen=True)
class Rule:
    """Who may call an operation, what it answers them, and a valid request for it."""

    allowed: frozenset[str]
    success: int
    public: bool = False
    hidden_from: frozenset[str] = frozenset()  # roles for whom the object looks missing (404)
    body: Body | None = None
    multipart: bool = False
    binary: bool = False  # a file download: the body is read from the stream, not parsed
    query: Body | None = None  # query parameters the operation needs
    path_objects: Mapping[str, Callable[[World], Any]] = field(default_factory=dict)

    def expected_status(self, persona: str) -> int:
        if self.public:
            return self.success
        if persona == ANONYMOUS:
            return 401
        if persona in self.allowed:
            return self.success
        if persona in self.hidden_from:
            return 404
        return 403


def _login_body(world: World) -> dict[str, Any]:
    """Admins sign in with their authenticator's code too."""
    user = world.user or world.target_user
    body = {"username": user.username, "password": PASSWORD}
    if mfa.mfa_required(user) and not mfa.mfa_enrolled(user):
        with_authenticator(user)
    if mfa.mfa_enrolled(user):
        body["code"] = fresh_code(user)
    return body


def _break_glass_body(world: World) -> dict[str, Any]:
    """Emergency access for tina, with the calling admin's own code (others' is never read)."""
    code = "000000"
    if world.user is not None and world.user.role == ADMIN:
        if not mfa.mfa_enrolled(world.user):
            with_authenticator(world.user)
        code = fresh_code(world.user)
    reason = "Matrix: the on-call operator must restore a deployment now"
    return {"user_id": world.target_user.pk, "reason": reason, "minutes": 30, "code": code}


def _open_break_glass(world: World) -> int:
    now = timezone.now()
    grant = BreakGlass.objects.create(
        user=world.target_user,
        granted_by=User.objects.filter(role=ADMIN).first(),
        reason="Matrix: open emergency access to end",
        started_at=now,
        expires_at=now + timedelta(minutes=30),
    )
    return grant.pk


def _upload_body(world: World) -> dict[str, Any]:
    return {
        "name": "uploaded-adapter",
        "base_model_id": str(world.approved_model.pk),
        "description": "from the matrix",
        "archive": SimpleUploadedFile(
            "adapter.tar.gz", world.archive, content_type="application/gzip"
        ),
    }


def _only(*roles: str) -> frozenset[str]:
    return frozenset(roles)


OTHER_PEOPLE_HIDDEN = _only(OPERATOR, APP_OWNER)  # they may see only their own user record
FLEET_VIEW = _only(ADMIN, OPERATOR, AUDITOR)
FLEET_MANAGE = _only(ADMIN, OPERATOR)
# The app owner persona owns the world's applications; another owner's are tested in tests/access.
APPS_OWNER_OR_MANAGER = _only(ADMIN, OPERATOR, APP_OWNER)
APPS_MANAGE = _only(ADMIN, OPERATOR)


def _legal_hold(world: World) -> int:
    return legal_hold_place(actor=system_actor(), name="Case 7", reason="Counsel's request").pk


def _breach_body(world: World) -> dict[str, Any]:
    return {
        "title": "Misdirected export",
        "description": "An export went to the wrong team.",
        "aware_at": (timezone.now() - timedelta(hours=1)).isoformat(),
        "categories": ["usage"],
    }


def _breach(world: World) -> int:
    fields = _breach_body(world) | {"aware_at": timezone.now() - timedelta(hours=1)}
    return breach_record(actor=system_actor(), **fields).pk


AUDIT_VIEW = _only(ADMIN, AUDITOR)
AUDIT_EXPORT = _only(ADMIN, AUDITOR)


def _deployment_body(world: World) -> dict[str, Any]:
    # The node's second GPU is free, so an allowed role's request is placed (201).
    return {"name": "matrix-deployment", "model_id": world.approved_model.pk}


def _signed_size(world: World) -> int:
    checkpoint = checkpoint_latest()
    assert checkpoint is not None
    return checkpoint.tree_size


def _stored_request(world: World) -> str:
    """A request whose content was kept (content is written by the gateway, never by this API)."""
    store_exchange(world.application, request_id="matrix-request-1")
    return "matrix-request-1"


def _erasure_body(world: World) -> dict[str, Any]:
    store_exchange(world.application, request_id="matrix-request-2", subject="matrix-subject")
    return {"application_id": world.application.pk, "subject": "matrix-subject"}


ROUTES_MANAGE = _only(ADMIN, OPERATOR)
EVALUATIONS_VIEW = _only(ADMIN, OPERATOR, AUDITOR)
EVALUATIONS_RUN = _only(ADMIN, OPERATOR)
ONE_ITEM = '{"messages": [{"role": "user", "content": "2 + 2?"}], "expected": "4", "scorer": {"type": "exact"}}'


def _route_body(world: World, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "default_class": world.task_class.name,
        "rules": [{"kind": "keyword", "value": "summar", "task_class": world.task_class.name}],
        "tiers": [{"task_class": world.task_class.name, "model_id": world.approved_model.pk}],
    }


def _unused_task_class(world: World) -> int:
    """A task class no route uses (the world's is its route's default, so cannot go)."""
    return routing.task_class_create(actor=system_actor(), name="unused").pk


def _price_body(world: World) -> dict[str, Any]:
    return {"name": "hosted-mini", "prompt_per_million": "0.15", "completion_per_million": "0.6"}


def _cost_window(world: World) -> dict[str, Any]:
    return {"since": "2026-01-01T00:00:00Z", "until": "2099-01-01T00:00:00Z"}


MATRIX: dict[tuple[str, str], Rule] = {
    # auth
    ("GET", "/api/v1/auth/csrf"): Rule(EVERYONE, 200, public=True),
    ("POST", "/api/v1/auth/login"): Rule(EVERYONE, 200, public=True, body=_login_body),
    ("POST", "/api/v1/auth/logout"): Rule(EVERYONE, 204),
    ("GET", "/api/v1/auth/me"): Rule(EVERYONE, 200),
    ("POST", "/api/v1/auth/password"): Rule(
        EVERYONE,
        204,
        body=lambda w: {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    ),
    # users
    ("GET", "/api/v1/users"): Rule(_only(ADMIN, AUDITOR), 200),
    ("POST", "/api/v1/users"): Rule(
        _only(ADMIN), 201, body=lambda w: {"username": "newcomer", "role": OPERATOR}
    ),
    ("GET", "/api/v1/users/{user_id}"): Rule(
        _only(ADMIN, AUDITOR), 200, hidden_from=OTHER_PEOPLE_HIDDEN
    ),
    ("PATCH", "/api/v1/users/{user_id}"): Rule(
        _only(ADMIN), 200, hidden_from=OTHER_PEOPLE_HIDDEN, body=lambda w: {"full_name": "T. T."}
    ),
    ("POST", "/api/v1/users/{user_id}/deactivate"): Rule(
        _only(ADMIN), 200, hidden_from=OTHER_PEOPLE_HIDDEN
    ),
    ("POST", "/api/v1/users/{user_id}/activate"): Rule(
        _only(ADMIN),
        200,
        hidden_from=OTHER_PEOPLE_HIDDEN,
        path_objects={"user_id": lambda w: w.inactive_user.pk},
    ),
    # break-glass (tina, an operator with an authenticator, gets emergency access)
    ("GET", "/api/v1/break-glass"): Rule(_only(ADMIN, AUDITOR), 200),
    ("POST", "/api/v1/break-glass"): Rule(
        _only(ADMIN), 201, hidden_from=OTHER_PEOPLE_HIDDEN, body=_break_glass_body
    ),
    ("POST", "/api/v1/break-glass/{grant_id}/end"): Rule(
        _only(ADMIN), 200, path_objects={"grant_id": _open_break_glass}
    ),
    # tokens (the token in the path is the caller's own; someone else's is tested below)
    ("GET", "/api/v1/tokens"): Rule(EVERYONE, 200),
    ("POST", "/api/v1/tokens"): Rule(
        EVERYONE, 201, body=lambda w: {"name": "matrix", "expires_in_days": 7}
    ),
    ("POST", "/api/v1/tokens/{token_id}/revoke"): Rule(EVERYONE, 200),
    # models
    ("GET", "/api/v1/models"): Rule(EVERYONE, 200),
    ("POST", "/api/v1/models"): Rule(
        _only(ADMIN, OPERATOR),
        202,
        body=lambda w: {
            "name": "fresh-model",
            "path": str(w.import_root / "fresh-model"),
            "licence": "apache-2.0",
        },
    ),
    ("GET", "/api/v1/models/{model_id}"): Rule(EVERYONE, 200),
    ("POST", "/api/v1/models/{model_id}/approve"): Rule(_only(ADMIN), 200),
    ("POST", "/api/v1/models/{model_id}/retire"): Rule(_only(ADMIN, OPERATOR), 200),
    ("POST", "/api/v1/models/{model_id}/verify"): Rule(_only(ADMIN, OPERATOR), 202),
    # adapters
    ("GET", "/api/v1/adapters"): Rule(EVERYONE, 200),
    ("POST", "/api/v1/adapters"): Rule(
        _only(ADMIN, OPERATOR),
        202,
        body=lambda w: {
            "name": "fresh-adapter",
            "base_model_id": w.approved_model.pk,
            "path": str(w.import_root / "fresh-adapter"),
        },
    ),
    ("POST", "/api/v1/adapters/upload"): Rule(
        _only(ADMIN, OPERATOR), 202, body=_upload_body, multipart=True
    ),
    ("GET", "/api/v1/adapters/{adapter_id}"): Rule(EVERYONE, 200),
    ("POST", "/api/v1/adapters/{adapter_id}/approve"): Rule(_only(ADMIN), 200),
    ("POST", "/api/v1/adapters/{adapter_id}/retire"): Rule(_only(ADMIN, OPERATOR), 200),
    ("POST", "/api/v1/adapters/{adapter_id}/verify"): Rule(_only(ADMIN, OPERATOR), 202),
    # jobs
    ("GET", "/api/v1/jobs"): Rule(_only(ADMIN, OPERATOR, AUDITOR), 200),
    ("GET", "/api/v1/jobs/{job_id}"): Rule(_only(ADMIN, OPERATOR, AUDITOR), 200),
    # enrollment tokens (they let a machine join the fleet: managers only)
    ("GET", "/api/v1/enrollment-tokens"): Rule(FLEET_MANAGE, 200),
    ("POST", "/api/v1/enrollment-tokens"): Rule(
        FLEET_MANAGE, 201, body=lambda w: {"name": "gpu-box-2", "expires_in_hours": 2}
    ),
    ("POST", "/api/v1/enrollment-tokens/{token_id}/revoke"): Rule(
        FLEET_MANAGE, 200, path_objects={"token_id": lambda w: w.enrollment_token.pk}
    ),
    # nodes
    ("GET", "/api/v1/nodes"): Rule(FLEET_VIEW, 200),
    ("GET", "/api/v1/nodes/{node_id}"): Rule(FLEET_VIEW, 200),
    ("POST", "/api/v1/nodes/{node_id}/revoke"): Rule(FLEET_MANAGE, 200),
    ("GET", "/api/v1/nodes/{node_id}/gpus/{gpu_id}/samples"): Rule(FLEET_VIEW, 200),
    # deployments
    ("GET", "/api/v1/deployments"): Rule(FLEET_VIEW, 200),
    ("POST", "/api/v1/deployments"): Rule(FLEET_MANAGE, 201, body=_deployment_body),
    ("GET", "/api/v1/deployments/{deployment_id}"): Rule(FLEET_VIEW, 200),
    ("PATCH", "/api/v1/deployments/{deployment_id}"): Rule(
        FLEET_MANAGE, 200, body=lambda w: {"adapter_ids": []}
    ),
    ("DELETE", "/api/v1/deployments/{deployment_id}"): Rule(FLEET_MANAGE, 200),
    # applications, their keys and grants
    ("GET", "/api/v1/applications"): Rule(EVERYONE, 200),
    ("POST", "/api/v1/applications"): Rule(
        APPS_OWNER_OR_MANAGER,
        201,
        body=lambda w: {"name": "matrix-app-new", "owner_id": w.application.owner_id},
    ),
    ("GET", "/api/v1/applications/{application_id}"): Rule(EVERYONE, 200),
    ("PATCH", "/api/v1/applications/{application_id}"): Rule(
        APPS_OWNER_OR_MANAGER, 200, body=lambda w: {"description": "from the matrix"}
    ),
    ("GET", "/api/v1/applications/{application_id}/keys"): Rule(EVERYONE, 200),
    ("POST", "/api/v1/applications/{application_id}/keys"): Rule(
        APPS_OWNER_OR_MANAGER, 201, body=lambda w: {"name": "matrix-key", "expires_in_days": 7}
    ),
    ("POST", "/api/v1/applications/{application_id}/keys/{key_id}/revoke"): Rule(
        APPS_OWNER_OR_MANAGER, 200
    ),
    ("GET", "/api/v1/applications/{application_id}/grants"): Rule(EVERYONE, 200),
    ("POST", "/api/v1/applications/{application_id}/grants"): Rule(
        APPS_MANAGE,
        201,
        body=lambda w: {"model_id": w.approved_model.pk},
        path_objects={"application_id": lambda w: w.ungranted_application.pk},
    ),
    ("DELETE", "/api/v1/applications/{application_id}/grants/{grant_id}"): Rule(APPS_MANAGE, 204),
    # usage (app owners see their own applications' only: tests/gateway/test_usage_api.py)
    ("GET", "/api/v1/usage"): Rule(EVERYONE, 200),
    ("GET", "/api/v1/usage/records"): Rule(EVERYONE, 200),
    # privacy (the app owner persona owns the world's application; another owner's: tests/privacy)
    ("GET", "/api/v1/privacy/content/{request_id}"): Rule(
        _only(ADMIN), 200, path_objects={"request_id": _stored_request}
    ),
    ("POST", "/api/v1/privacy/subjects/erase"): Rule(
        _only(ADMIN, APP_OWNER), 200, body=_erasure_body
    ),
    # audit
    ("GET", "/api/v1/audit/events"): Rule(_only(ADMIN, AUDITOR), 200),
    ("GET", "/api/v1/audit/events/{seq}"): Rule(_only(ADMIN, AUDITOR), 200),
    ("GET", "/api/v1/audit/key"): Rule(AUDIT_VIEW, 200),
    ("GET", "/api/v1/audit/checkpoints"): Rule(AUDIT_VIEW, 200),
    ("GET", "/api/v1/audit/checkpoints/latest"): Rule(AUDIT_VIEW, 200),
    ("GET", "/api/v1/audit/proofs/inclusion"): Rule(
        AUDIT_VIEW, 200, query=lambda w: {"seq": w.event.seq, "tree_size": _signed_size(w)}
    ),
    ("GET", "/api/v1/audit/proofs/consistency"): Rule(
        AUDIT_VIEW, 200, query=lambda w: {"first": 1, "second": _signed_size(w)}
    ),
    ("GET", "/api/v1/audit/verifications"): Rule(AUDIT_VIEW, 200),
    ("POST", "/api/v1/audit/exports"): Rule(
        AUDIT_EXPORT, 202, body=lambda w: {"action": "model.", "outcome": "success"}
    ),
    ("GET", "/api/v1/audit/exports"): Rule(AUDIT_EXPORT, 200),
    ("GET", "/api/v1/audit/exports/{export_id}"): Rule(AUDIT_EXPORT, 200),
    ("GET", "/api/v1/audit/exports/{export_id}/download"): Rule(AUDIT_EXPORT, 200, binary=True),
    # compliance: retention, legal holds, breaches, access report
    ("GET", "/api/v1/compliance/retention"): Rule(AUDIT_VIEW, 200),
    ("PUT", "/api/v1/compliance/retention/{category}"): Rule(
        _only(ADMIN),
        200,
        body=lambda w: {"days": 500},
        path_objects={"category": lambda w: "usage"},
    ),
    ("GET", "/api/v1/compliance/holds"): Rule(AUDIT_VIEW, 200),
    ("POST", "/api/v1/compliance/holds"): Rule(
        _only(ADMIN), 201, body=lambda w: {"name": "Case 7", "reason": "Counsel's request"}
    ),
    ("POST", "/api/v1/compliance/holds/{hold_id}/release"): Rule(
        _only(ADMIN), 200, path_objects={"hold_id": _legal_hold}
    ),
    ("GET", "/api/v1/compliance/breaches"): Rule(AUDIT_VIEW, 200),
    ("POST", "/api/v1/compliance/breaches"): Rule(_only(ADMIN), 201, body=_breach_body),
    ("POST", "/api/v1/compliance/breaches/{breach_id}/report"): Rule(
        _only(ADMIN),
        200,
        body=lambda w: {"reported_at": timezone.now().isoformat()},
        path_objects={"breach_id": _breach},
    ),
    ("GET", "/api/v1/compliance/access-report"): Rule(
        AUDIT_VIEW,
        200,
        query=lambda w: {"since": "2026-01-01T00:00:00Z", "until": "2099-01-01T00:00:00Z"},
    ),
    # task classes and routes: everyone reads them; admins and operators change them
    ("GET", "/api/v1/task-classes"): Rule(EVERYONE, 200),
    ("POST", "/api/v1/task-classes"): Rule(
        ROUTES_MANAGE,
        201,
        body=lambda w: {"name": "extraction", "examples": ["List the medications."]},
    ),
    ("GET", "/api/v1/task-classes/{task_class_id}"): Rule(EVERYONE, 200),
    ("PATCH", "/api/v1/task-classes/{task_class_id}"): Rule(
        ROUTES_MANAGE, 200, body=lambda w: {"description": "Anything else."}
    ),
    ("DELETE", "/api/v1/task-classes/{task_class_id}"): Rule(
        ROUTES_MANAGE, 204, path_objects={"task_class_id": _unused_task_class}
    ),
    ("GET", "/api/v1/routes"): Rule(EVERYONE, 200),
    ("POST", "/api/v1/routes"): Rule(
        ROUTES_MANAGE, 201, body=lambda w: _route_body(w, "new-route")
    ),
    ("GET", "/api/v1/routes/{route_id}"): Rule(EVERYONE, 200),
    ("PUT", "/api/v1/routes/{route_id}"): Rule(
        ROUTES_MANAGE, 200, body=lambda w: _route_body(w, w.route.name)
    ),
    ("DELETE", "/api/v1/routes/{route_id}"): Rule(ROUTES_MANAGE, 204),
    # costs (everyone reads them; app owners see their own applications' rows only:
    # tests/routing/test_costs.py); prices and cost models are set by admins and operators
    ("GET", "/api/v1/costs"): Rule(EVERYONE, 200, query=_cost_window),
    ("GET", "/api/v1/costs/reference-prices"): Rule(EVERYONE, 200),
    ("POST", "/api/v1/costs/reference-prices"): Rule(ROUTES_MANAGE, 201, body=_price_body),
    ("PUT", "/api/v1/costs/reference-prices/{price_id}"): Rule(
        ROUTES_MANAGE, 200, body=_price_body
    ),
    ("DELETE", "/api/v1/costs/reference-prices/{price_id}"): Rule(ROUTES_MANAGE, 204),
    ("GET", "/api/v1/costs/models"): Rule(FLEET_VIEW, 200),
    ("PUT", "/api/v1/costs/models/{deployment_id}"): Rule(
        ROUTES_MANAGE, 200, body=lambda w: {"kind": "gpu_hour", "gpu_hour_price": "2.5"}
    ),
    ("DELETE", "/api/v1/costs/models/{deployment_id}"): Rule(ROUTES_MANAGE, 204),
    # evaluations
    ("GET", "/api/v1/evaluations/sets"): Rule(EVALUATIONS_VIEW, 200),
    ("POST", "/api/v1/evaluations/sets"): Rule(
        EVALUATIONS_RUN, 201, body=lambda w: {"name": "uploaded-set", "jsonl": ONE_ITEM}
    ),
    ("DELETE", "/api/v1/evaluations/sets/{set_id}"): Rule(EVALUATIONS_RUN, 204),
    ("GET", "/api/v1/evaluations"): Rule(EVALUATIONS_VIEW, 200),
    ("POST", "/api/v1/evaluations"): Rule(
        EVALUATIONS_RUN,
        202,
        body=lambda w: {
            "evaluation_set_id": w.evaluation_set.pk,
            "candidates": [w.approved_model.name, w.route.name],
            "target_score": 0.8,
        },
    ),
    ("GET", "/api/v1/evaluations/{evaluation_id}"): Rule(EVALUATIONS_VIEW, 200),
    # applying a result changes a route
    ("POST", "/api/v1/evaluations/{evaluation_id}/apply"): Rule(
        ROUTES_MANAGE,
        200,
        body=lambda w: {"route_id": w.route.pk, "task_class": w.task_class.name},
    ),
}

ERROR_CODES = {401: "not_authenticated", 403: "permission_denied", 404: "not_found"}


def schema_operations() -> set[tuple[str, str]]:
    paths = api.get_openapi_schema()["paths"]
    return {(method.upper(), path) for path, operations in paths.items() for method in operations}


def tar_gz_of(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for file in sorted(directory.iterdir()):
            archive.add(file, arcname=file.name)
    return buffer.getvalue()


@pytest.fixture
def personas(admin: User, operator: User, auditor: User, app_owner: User) -> dict[str, User]:
    return {ADMIN: admin, OPERATOR: operator, AUDITOR: auditor, APP_OWNER: app_owner}


def build_world(
    persona: str,
    personas: dict[str, User],
    importer: User,
    import_root: Path,
    tmp_path: Path,
    capture_on_commit: Any,
) -> World:
    """Registry entries imported by ``importer`` (bob, a second admin) so that alice may approve
    them; a pending and an approved model, a pending adapter, users and tokens; an enrolled node
    with GPUs, an unused enrollment token and a deployment on the approved model (priced per
    million tokens); two applications of the app owner persona, one with a key and a grant of the
    approved model; a task class, a route on the approved model, a default reference price, an
    evaluation set and a finished evaluation."""
    bob, alice = actor(importer), actor(personas[ADMIN])
    with capture_on_commit(execute=True):
        pending_model, job = registry.model_import(
            actor=bob,
            name="pending-model",
            path=str(write_model_dir(import_root / "pending-model")),
        )
        approved_model, _ = registry.model_import(
            actor=bob, name="base-model", path=str(write_model_dir(import_root / "base-model"))
        )
    approved_model.refresh_from_db()
    registry.entry_approve(actor=alice, entry=approved_model)
    with capture_on_commit(execute=True):
        pending_adapter, _ = registry.adapter_import(
            actor=bob,
            name="pending-adapter",
            base_model=approved_model,
            path=str(write_adapter_dir(import_root / "pending-adapter")),
        )
    for entry in (pending_model, approved_model, pending_adapter):
        entry.refresh_from_db()
    assert pending_model.status == EntryStatus.PENDING
    assert approved_model.status == EntryStatus.APPROVED
    assert pending_adapter.status == EntryStatus.PENDING

    write_model_dir(import_root / "fresh-model")
    write_adapter_dir(import_root / "fresh-adapter")
    archive = tar_gz_of(write_adapter_dir(tmp_path / "upload-source"))

    target_user = make_user("tina", OPERATOR)
    with_authenticator(target_user)  # as emergency access needs
    inactive_user = make_user("ivan", APP_OWNER)
    inactive_user.is_active = False
    inactive_user.save(update_fields=["is_active"])

    user = personas.get(persona)
    spare_token, _ = token_create(actor=actor(user or importer), name="spare")

    _, enrolling = fleet.enrollment_token_create(actor=bob, name="gpu-box")
    node, _ = fleet.node_enroll(token=enrolling, name="gpu-box", hostname="gpu-box.local")
    node_heartbeat(node=node, report={"gpus": [gpu_reading(0), gpu_reading(1)]})
    enrollment_token, _ = fleet.enrollment_token_create(actor=bob, name="spare-box")
    deployment = deployment_create(
        actor=bob, name="served", model=approved_model, node=node, gpu_indices=[0]
    )
    owner = personas[APP_OWNER]
    application = access.application_create(actor=bob, name="matrix-app", owner=owner)
    api_key, _ = access.api_key_create(actor=bob, application=application, name="spare")
    grant = access.grant_create(actor=bob, application=application, model=approved_model)
    ungranted = access.application_create(actor=bob, name="matrix-app-2", owner=owner)
    task_class = routing.task_class_create(
        actor=bob, name="general", examples=["Summarise this discharge letter."]
    )
    route = routing.route_create(
        actor=bob,
        definition=routing.RouteDefinition(
            name="matrix-route",
            default_class="general",
            rules=[routing.RuleSpec(kind="keyword", value="summar", task_class="general")],
            tiers=[routing.TierSpec(task_class="general", model_id=approved_model.pk)],
        ),
    )
    reference_price = reference_price_save(
        actor=bob,
        name="hosted-large",
        prompt_per_million=Decimal("3"),
        completion_per_million=Decimal("15"),
        is_default=True,
    )
    cost_model = cost_model_set(
        actor=bob, deployment=deployment, kind="per_million", price_per_million=Decimal("0.5")
    )
    evaluation_set = evaluation_set_create(actor=bob, name="matrix-set", jsonl=ONE_ITEM)
    # A finished run, written as its job would leave it (running one calls the gateway).
    evaluation = Evaluation.objects.create(
        evaluation_set=evaluation_set_create(actor=bob, name="matrix-set-run", jsonl=ONE_ITEM),
        candidates=[approved_model.name, route.name],
        target_score=0.5,
        status=EvaluationStatus.SUCCEEDED,
        progress=1.0,
        report={"target_score": 0.5, "candidates": [], "smallest_meeting": approved_model.name},
        created_by=bob.user,
    )
    export_job = audit_export_request(actor=bob, filters={}, enqueue=False)
    audit_export_build(job_id=str(export_job.pk))  # signs a checkpoint over everything above
    export = AuditExport.objects.get(pk=export_job.object_id)
    assert export.file_name, "the world's audit export did not finish"
    return World(
        persona=persona,
        user=user,
        pending_model=pending_model,
        approved_model=approved_model,
        pending_adapter=pending_adapter,
        target_user=target_user,
        inactive_user=inactive_user,
        spare_token=spare_token,
        job=job,
        event=AuditEvent.objects.order_by("seq").first(),  # type: ignore[arg-type]
        import_root=import_root,
        archive=archive,
        node=node,
        gpu=node.gpus.get(index=0),
        enrollment_token=enrollment_token,
        deployment=deployment,
        application=application,
        api_key=api_key,
        grant=grant,
        ungranted_application=ungranted,
        task_class=task_class,
        route=route,
        reference_price=reference_price,
        cost_model=cost_model,
        evaluation_set=evaluation_set,
        evaluation=evaluation,
        export=export,
    )


def send(client: ApiClient, method: str, path: str, rule: Rule, world: World) -> Any:
    """The request a script would make: JSON, or multipart for uploads."""
    relative = path.removeprefix("/api/v1")
    body = rule.body(world) if rule.body else None
    if rule.query:
        path += "?" + urlencode(rule.query(world))
        relative = path.removeprefix("/api/v1")
    if rule.binary:
        response = client.client.generic(method, path, headers=client.headers)
        if response.streaming:  # a FileResponse: reading to the end closes it
            b"".join(response.streaming_content)
            response.data = None
        else:
            response.data = response.json() if response.content else None
        return response
    if rule.multipart:
        response: Any = client.client.post(path, data=body, headers=client.headers)
        response.data = response.json() if response.content else None
        return response
    if body is None and method in {"POST", "PATCH"}:
        body = {}
    return client.call(method.lower(), relative, body)


def test_matrix_covers_exactly_the_operations_in_the_schema() -> None:
    operations = schema_operations()
    missing = sorted(operations - MATRIX.keys())
    stale = sorted(MATRIX.keys() - operations)
    assert not missing, f"routes without a row in MATRIX (say who may call them): {missing}"
    assert not stale, f"rows in MATRIX for routes that no longer exist: {stale}"


def test_public_operations_are_exactly_those_without_security_in_the_schema() -> None:
    paths = api.get_openapi_schema()["paths"]
    unauthenticated = {
        (method.upper(), path)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if not operation.get("security")
    }
    assert unauthenticated == {key for key, rule in MATRIX.items() if rule.public}


def matrix_cases() -> list[Any]:
    cases = []
    for method, template in sorted(MATRIX):
        for persona in PERSONAS:
            cases.append(
                pytest.param(method, template, persona, id=f"{method} {template} {persona}")
            )
    return cases


@pytest.mark.parametrize(("method", "template", "persona"), matrix_cases())
def test_operation_answers_each_persona_as_the_matrix_says(
    method: str,
    template: str,
    persona: str,
    personas: dict[str, User],
    admin2: User,
    import_root: Path,
    tmp_path: Path,
    api_as: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    rule = MATRIX[(method, template)]
    world = build_world(
        persona, personas, admin2, import_root, tmp_path, django_capture_on_commit_callbacks
    )
    client = api_as(world.user)
    values = world.path_values()
    values.update({name: pick(world) for name, pick in rule.path_objects.items()})
    path = template.format(**values)
    seq_before = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()

    response = send(client, method, path, rule, world)

    expected = rule.expected_status(persona)
    assert response.status_code == expected, (
        f"{method} {template} as {persona}: expected {expected}, got {response.status_code} "
        f"{response.data}"
    )
    if expected >= 400:
        assert response.data["code"] == ERROR_CODES[expected]
        # Refused calls change nothing: every change is audited, and the only new event may be
        # the record of the denial itself.
        new_actions = list(
            AuditEvent.objects.filter(seq__gt=seq_before).values_list("action", flat=True)
        )
        assert new_actions == (["permission.denied"] if expected == 403 else [])


@pytest.mark.parametrize("role", ROLES)
def test_someone_elses_token_is_revocable_only_by_an_admin(
    role: str, personas: dict[str, User], admin2: User, api_as: Any
) -> None:
    token, _ = token_create(actor=actor(admin2), name="bobs")
    response = api_as(personas[role]).post(f"/tokens/{token.pk}/revoke")
    expected = 200 if role == ADMIN else 404
    assert response.status_code == expected
    token.refresh_from_db()
    assert (token.revoked_at is not None) == (role == ADMIN)


@pytest.mark.parametrize("role", ROLES)
def test_everyone_sees_their_own_user_record_but_only_admins_edit_it(
    role: str, personas: dict[str, User], api_as: Any
) -> None:
    me = personas[role]
    client = api_as(me)
    assert client.get(f"/users/{me.pk}").status_code == 200
    response = client.patch(f"/users/{me.pk}", {"full_name": "Renamed"})
    assert response.status_code == (200 if role == ADMIN else 403)
    me.refresh_from_db()
    assert (me.full_name == "Renamed") == (role == ADMIN)


def test_approval_by_the_importing_admin_is_refused_as_four_eyes(
    personas: dict[str, User],
    admin2: User,
    import_root: Path,
    tmp_path: Path,
    api_as: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    world = build_world(
        ADMIN, personas, admin2, import_root, tmp_path, django_capture_on_commit_callbacks
    )
    response = api_as(admin2).post(f"/models/{world.pending_model.pk}/approve")
    assert response.status_code == 403
    assert response.data["code"] == "four_eyes"
    world.pending_model.refresh_from_db()
    assert world.pending_model.status == EntryStatus.PENDING


def session_client(username: str) -> Client:
    """A browser: CSRF enforced, signed in with a session cookie."""
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        "/api/v1/auth/login",
        data=json.dumps({"username": username, "password": PASSWORD}),
        content_type="application/json",
    )
    assert response.status_code == 200
    return client


def test_unsafe_session_request_without_csrf_token_is_refused(operator: User) -> None:
    client = session_client(operator.username)
    assert client.get("/api/v1/auth/me").status_code == 200  # safe methods need no token

    refused = client.post(
        "/api/v1/tokens", data=json.dumps({"name": "csrf"}), content_type="application/json"
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "permission_denied"
    assert not ApiToken.objects.filter(name="csrf").exists()

    csrf = client.get("/api/v1/auth/csrf").json()["csrf_token"]
    accepted = client.post(
        "/api/v1/tokens",
        data=json.dumps({"name": "csrf"}),
        content_type="application/json",
        headers={"X-CSRFToken": csrf},
    )
    assert accepted.status_code == 201
    assert ApiToken.objects.filter(name="csrf", user=operator).exists()


@pytest.mark.parametrize("authorization", [None, "Bearer apt_notarealtoken"])
def test_unsafe_request_without_valid_credentials_is_401_even_with_csrf_enforced(
    authorization: str | None, operator: User
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = Client(enforce_csrf_checks=True).post(
        "/api/v1/tokens",
        data=json.dumps({"name": "x"}),
        content_type="application/json",
        headers=headers,
    )
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
