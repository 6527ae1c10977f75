"""What the application pages share: reading a submitted form defensively, finding an
application the person may see (someone else's answers like a missing one), and the choices
their forms offer."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse

from appliance.access import selectors, services
from appliance.access.choices import ApplicationStatus, DataClassification, DataPolicy
from appliance.access.models import Application
from appliance.accounts.models import User
from appliance.console.base import ConsoleRequest, FormErrors
from appliance.core.errors import DomainError

INT_MAX = 2**31 - 1  # the API's bound for limits (a PositiveIntegerField)
BUDGET_MAX = 2**62  # the API's bound for the monthly token budget (a BigIntegerField)
NAME_MAX = 100
DESCRIPTION_MAX = 2000

LIMIT_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("requests_per_minute", "Requests per minute", INT_MAX),
    ("tokens_per_minute", "Tokens per minute", INT_MAX),
    ("monthly_token_budget", "Monthly token budget", BUDGET_MAX),
    ("max_concurrent_requests", "Concurrent requests", INT_MAX),
    ("max_tokens_per_request", "Max tokens per request", INT_MAX),
)
CLASSIFICATION_CHOICES = [(c.value, c.label) for c in DataClassification]
POLICY_CHOICES = [
    (DataPolicy.NO_CONTENT.value, "No content: prompts and completions are never stored"),
    (DataPolicy.KEEP_ENCRYPTED.value, "Keep encrypted: stored under a per-subject key"),
]
STATUS_CHOICES = [("", "Any status"), *((s.value, s.label) for s in ApplicationStatus)]


class Form:
    """A submitted form read the way the API's schemas read a body: text trimmed and bounded,
    numbers parsed; what cannot be read is a field error, never a crash."""

    def __init__(self, data: QueryDict) -> None:
        self.data = data
        self.errors = FormErrors()

    def has(self, name: str) -> bool:
        return name in self.data

    def text(self, name: str, *, max_length: int = NAME_MAX) -> str:
        value = self.data.get(name, "").strip()
        if len(value) > max_length:
            self.errors.add(name, f"At most {max_length} characters.")
        return value

    def number(self, name: str, *, high: int = INT_MAX) -> int | None:
        """A whole number, or None when left empty."""
        raw = self.data.get(name, "").strip()
        if not raw:
            return None
        try:
            value = int(raw)
        except ValueError:
            self.errors.add(name, "A whole number, please.")
            return None
        if abs(value) > high:
            self.errors.add(name, f"At most {high}.")
            return None
        return value

    def limits(self) -> dict[str, int | None]:
        """The five limits; an empty one means none."""
        return {name: self.number(name, high=high) for name, _, high in LIMIT_FIELDS}

    def values(self) -> dict[str, str]:
        """What was sent, to show in the form again."""
        return {name: self.data.get(name, "") for name in self.data}


def visible_applications(request: ConsoleRequest) -> QuerySet[Application]:
    """The applications this person may see, as the API decides it."""
    return selectors.application_list(actor=request.actor)


def find_application(request: ConsoleRequest, application_id: int) -> Application | None:
    return visible_applications(request).filter(pk=application_id).first()


def application_url(application: Application) -> str:
    """The application's page, where its changes start and return."""
    return reverse("console:application", args=[application.pk])


def owner_choices() -> list[tuple[Any, str]]:
    """Who may own an application (as ``application_create`` checks): active app owners and
    admins. A read the accounts selectors do not offer to operators, who may name owners."""
    owners = User.objects.filter(is_active=True, role__in=services.OWNER_ROLES).order_by("username")
    return [("", "— choose —"), *((u.pk, f"{u.username} ({u.get_role_display()})") for u in owners)]


def find_owner(form: Form) -> User | None:
    """The user named by ``owner_id``; unknown ids are a field error (the API answers 404)."""
    owner_id = form.number("owner_id")
    if owner_id is None:
        return None
    owner = User.objects.filter(pk=owner_id).first()
    if owner is None:
        form.errors.add("owner_id", "No such user.")
    return owner


def limit_values(application: Application) -> dict[str, Any]:
    return {name: getattr(application, name) for name, _, _ in LIMIT_FIELDS}


def not_done(request: ConsoleRequest, error: DomainError, back: str) -> HttpResponse:
    """A confirmed action the service refused (a rule, or the audit log being unavailable):
    why, with its status, and the way back."""
    return render(
        request,
        "console/pages/application_refused.html",
        {"errors": FormErrors(error), "back": back},
        status=error.status,
    )
