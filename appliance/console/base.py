"""What every console view shares: who is signed in and what they may do, the page frame,
pagination, the not-found and confirmation pages, the flash-and-redirect after a change, and
turning a service's domain error (or an API schema's refusal) into a form's field errors."""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pydantic
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django_htmx.http import HttpResponseClientRedirect

from appliance.accounts.actors import actor_for_user
from appliance.accounts.models import User
from appliance.accounts.permissions import Capability, allows
from appliance.console.nav import flash
from appliance.core.actors import Actor
from appliance.core.errors import DomainError

PAGE_SIZE = 25
View = Callable[..., HttpResponse]


class ConsoleRequest(HttpRequest):
    """A request that reached a console view: signed in, with its Actor."""

    user: User
    actor: Actor


def console_view(capability: Capability | None = None) -> Callable[[View], View]:
    """Signed-in people only (others go to the sign-in page and come back); with a capability,
    those without it get a 403 page that says what they lack. Times show in the person's zone."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not isinstance(user, User):
                if getattr(request, "htmx", False):
                    # A page's own refresh after the session ended: the whole page goes to the
                    # sign-in page, not the fragment into a corner of it.
                    back = request.htmx.current_url_abs_path or reverse("console:dashboard")  # type: ignore[attr-defined]
                    target = reverse("console:sign-in") + "?" + urlencode({"next": back})
                    return HttpResponseClientRedirect(target)
                target = reverse("console:sign-in") + "?" + urlencode({"next": request.path})
                return HttpResponseRedirect(target)
            request.actor = actor_for_user(user)  # type: ignore[attr-defined]
            if capability is not None and not allows(request.actor, capability):  # type: ignore[attr-defined]
                return forbidden(request, capability)
            with timezone.override(_zone(user)):
                return view(request, *args, **kwargs)

        return wrapper

    return decorate


def _zone(user: User) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(user.time_zone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def forbidden(request: HttpRequest, capability: Capability) -> HttpResponse:
    return render(request, "console/forbidden.html", {"capability": capability.value}, status=403)


def not_found(request: HttpRequest, what: str) -> HttpResponse:
    """Someone else's object answers exactly like a missing one, so a 404 never tells a person
    what exists beyond what they may see."""
    return render(request, "console/not_found.html", {"what": what}, status=404)


def confirm(
    request: HttpRequest, *, title: str, consequence: str, action: str, cancel_url: str
) -> HttpResponse:
    """The GET of an action that cannot be taken back: what it will do, one button that POSTs,
    and the way back; only the POST acts, so no link or prefetch ever does it."""
    context = {
        "title": title,
        "consequence": consequence,
        "action": action,
        "cancel_url": cancel_url,
    }
    return render(request, "console/confirm.html", context)


def done(request: HttpRequest, message: str, to: str, *, status: int = 302) -> HttpResponse:
    """After a change: the message shows on the next page, and a redirect (302, or 303 where a
    page asks for it) keeps a reload from sending the form again."""
    flash(request, message)
    return HttpResponseRedirect(to, status=status)


def paginate(request: HttpRequest, items: Any, size: int = PAGE_SIZE) -> Page:
    """One page of an ordered queryset or list, from ``?page=``; out-of-range numbers give the
    nearest page rather than an error."""
    return Paginator(items, size).get_page(request.GET.get("page"))


def query_without_page(request: HttpRequest) -> str:
    """The current filters, for the pagination links to keep."""
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


class FormErrors:
    """A service's refusal shown on a form: its detail at the top, its field errors at their
    fields."""

    def __init__(self, error: DomainError | None = None) -> None:
        self.detail = error.detail if error is not None else ""
        self.fields: dict[str, list[str]] = dict(error.fields) if error is not None else {}

    def __bool__(self) -> bool:
        return bool(self.detail or self.fields)

    def add(self, field: str, message: str) -> None:
        self.fields.setdefault(field, []).append(message)
        self.detail = self.detail or "Please correct the fields marked below."


def schema_errors(
    error: pydantic.ValidationError,
    messages: dict[str, str] | None = None,
    field: str = "form",
    errors: FormErrors | None = None,
) -> FormErrors:
    """An API schema's refusals at their fields (``field`` when it names none), in the page's
    plainer ``messages`` where it has one for the problem, so a form obeys the API's rules."""
    errors = FormErrors() if errors is None else errors
    for problem in error.errors():
        name = str(problem["loc"][0]) if problem["loc"] else field
        errors.add(name, (messages or {}).get(problem["type"], str(problem["msg"])))
    return errors


def invalid(
    request: HttpRequest, template: str, context: dict[str, Any], errors: FormErrors
) -> HttpResponse:
    """Render the form again with what could not be read in it (422): nothing was tried."""
    return render(request, template, {**context, "errors": errors}, status=422)


def refused(
    request: HttpRequest, template: str, context: dict[str, Any], error: DomainError
) -> HttpResponse:
    """Render the form again with the service's error and its status (422, 409, ...)."""
    return render(request, template, {**context, "errors": FormErrors(error)}, status=error.status)
