"""The management API, ``/api/v1``: one NinjaAPI for people and scripts, one Router per context.

The agent API (``/api/agent/v1``, node credentials) will be a separate NinjaAPI with its own auth.
"""

from __future__ import annotations

from ninja import NinjaAPI

from appliance.access.api import router as applications_router
from appliance.accounts.api import auth_router, break_glass_router, tokens_router, users_router
from appliance.api import errors
from appliance.api.auth import AUTH
from appliance.audit.api import router as audit_router
from appliance.audit.compliance_api import router as compliance_router
from appliance.core.api import router as jobs_router
from appliance.fleet.api import deployments_router, enrollment_router, nodes_router
from appliance.gateway.api import router as usage_router
from appliance.privacy.api import router as privacy_router
from appliance.registry.api import adapters_router, models_router
from appliance.routing.api import (
    costs_router,
    evaluations_router,
    routes_router,
    task_classes_router,
)

api = NinjaAPI(
    title="Appliance management API",
    version="1",
    description=(
        "Manage users, models, adapters, nodes, deployments, applications, routes, costs, evaluations and the audit log. Authenticate with a session cookie "
        "(send the CSRF token on unsafe methods) or `Authorization: Bearer <API token>`. Every error "
        "has the body `{code, detail, fields, request_id}`."
    ),
    auth=AUTH,
    urls_namespace="api-v1",
    docs_url="/docs",
)
errors.install(api)
api.add_router("/auth", auth_router)
api.add_router("/users", users_router)
api.add_router("/tokens", tokens_router)
api.add_router("/break-glass", break_glass_router)
api.add_router("/models", models_router)
api.add_router("/adapters", adapters_router)
api.add_router("/jobs", jobs_router)
api.add_router("/enrollment-tokens", enrollment_router)
api.add_router("/nodes", nodes_router)
api.add_router("/deployments", deployments_router)
api.add_router("/applications", applications_router)
api.add_router("/usage", usage_router)
api.add_router("/audit", audit_router)
api.add_router("/compliance", compliance_router)
api.add_router("/privacy", privacy_router)
api.add_router("/task-classes", task_classes_router)
api.add_router("/routes", routes_router)
api.add_router("/costs", costs_router)
api.add_router("/evaluations", evaluations_router)
