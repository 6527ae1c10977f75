"""URL map: the management API now; the gateway (/v1), agent API and console join here later."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from appliance.api.v1 import api


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and `make run`; says nothing about the installation."""
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("healthz", healthz),
    path("api/v1/", api.urls),
]
