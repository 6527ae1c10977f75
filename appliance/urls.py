"""URL map: the gateway (/v1), the management API, the agent API, and the web console."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseRedirect, JsonResponse
from django.urls import include, path, re_path

from appliance.api.agent_v1 import api as agent_api
from appliance.api.errors import error_body
from appliance.api.v1 import api
from appliance.gateway import views as gateway_views


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and `make run`; says nothing about the installation."""
    return JsonResponse({"status": "ok"})


def api_not_found(request: HttpRequest) -> JsonResponse:
    """Unknown paths under /api/ answer in the API's error format, not Django's HTML page."""
    return JsonResponse(error_body("not_found", "No such API endpoint."), status=404)


def home(request: HttpRequest) -> HttpResponseRedirect:
    """A browser that opens the appliance's address lands in the console."""
    return HttpResponseRedirect("/console/")


urlpatterns = [
    path("", home),
    path("healthz", healthz),
    path("console/", include("appliance.console.urls")),
    path("v1", gateway_views.not_found),
    path("v1/", include("appliance.gateway.urls")),
    path("api/v1/", api.urls),
    path("api/agent/v1/", agent_api.urls),
    re_path(r"^api/", api_not_found),
]
