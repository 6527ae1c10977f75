"""The agent API, ``/api/agent/v1``: a NinjaAPI of its own, for node agents only.

Nodes authenticate with their own credential; nothing here accepts a person's session or token.
"""

from __future__ import annotations

from ninja import NinjaAPI

from appliance.api import errors
from appliance.fleet.agent_api import NodeAuth
from appliance.fleet.agent_api import router as agent_router

api = NinjaAPI(
    title="Appliance agent API",
    version="agent-1",
    description="Called by `appliance-agent` on each node with its credential as a Bearer token.",
    auth=NodeAuth(),
    urls_namespace="api-agent-v1",
    docs_url=None,
)
errors.install(api)
api.add_router("", agent_router)
