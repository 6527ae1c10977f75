"""The OpenAI-compatible endpoints under /v1. Thin: the request path lives in handler.py."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from appliance.gateway.auth import authenticate
from appliance.gateway.choices import Endpoint
from appliance.gateway.errors import GatewayError, model_not_found
from appliance.gateway.handler import infer
from appliance.gateway.targets import Target
from appliance.routing.plans import RoutePlan

logger = logging.getLogger(__name__)

View = Callable[..., Any]  # an async view (django-stubs types views as sync)


def gateway_view(method: str) -> Callable[[View], View]:
    """One HTTP method; every failure answered in OpenAI's error shape (never an HTML page)."""

    def decorate(view: View) -> View:
        @csrf_exempt  # authenticated by the Authorization header, never by a cookie
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            try:
                if request.method != method:
                    raise GatewayError(
                        405, f"Use {method} for this endpoint.", code="method_not_allowed"
                    )
                return await view(request, *args, **kwargs)
            except GatewayError as error:
                response = error.response()
                if error.status == 405:
                    response["Allow"] = method
                return response
            except Exception:
                logger.exception("gateway request failed")
                return GatewayError(
                    500,
                    "The gateway failed; quote the X-Request-ID header to your administrator.",
                    type="api_error",
                    code="internal_error",
                ).response()

        return wrapper

    return decorate


def _model_entry(target: Target) -> dict[str, Any]:
    return {
        "id": target.name,
        "object": "model",
        "created": target.created,
        "owned_by": "appliance",
        "parent": target.parent,
    }


def _route_entry(plan: RoutePlan) -> dict[str, Any]:
    return {
        "id": plan.name,
        "object": "model",
        "created": plan.created,
        "owned_by": "appliance",
        "parent": None,
    }


@gateway_view("GET")
async def models_list(request: HttpRequest) -> JsonResponse:
    """The models, adapters and routes this key may call (granted and approved), nothing else."""
    principal = await authenticate(request)
    entries = [_model_entry(t) for _, t in sorted(principal.targets.items())]
    entries += [_route_entry(plan) for _, plan in sorted(principal.routes.items())]
    return JsonResponse({"object": "list", "data": entries})


@gateway_view("GET")
async def model_detail(request: HttpRequest, name: str) -> JsonResponse:
    principal = await authenticate(request)
    target = principal.targets.get(name)
    if target is not None:
        return JsonResponse(_model_entry(target))
    plan = principal.routes.get(name)
    if plan is None:
        raise model_not_found(name)
    return JsonResponse(_route_entry(plan))


@gateway_view("POST")
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    return await infer(request, Endpoint.CHAT)


@gateway_view("POST")
async def completions(request: HttpRequest) -> HttpResponseBase:
    return await infer(request, Endpoint.COMPLETIONS)


@gateway_view("POST")
async def embeddings(request: HttpRequest) -> HttpResponseBase:
    return await infer(request, Endpoint.EMBEDDINGS)


@csrf_exempt
async def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Any other path under /v1, whatever the method."""
    return GatewayError(404, "No such endpoint.", code="unknown_url").response()
