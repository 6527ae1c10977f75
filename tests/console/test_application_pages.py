"""The console's application pages: the list, creating an application, its page, its details,
limits, data policy and status, its API keys and grants. Each page per role (admin, operator,
auditor, app owner, anonymous); app owners see and manage only their own applications and keys,
never limits, policy or grants; auditors see everything and change nothing; someone else's
application answers like a missing one; every change is audited with the person as actor."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from appliance.access import services
from appliance.access.models import ApiKey, Application, Grant
from appliance.accounts.choices import Role
from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.registry.models import Adapter, BaseModel
from appliance.routing import services as routing
from appliance.routing.models import Route
from appliance.routing.services import RouteDefinition, TierSpec
from tests.access.conftest import (  # noqa: F401
    access_state,
    approved_adapters,
    approved_model,
    foreign_adapter,
    oscar,
    oscars_app,
    owens_app,
    pending_model,
)
from tests.conftest import actor, make_user

pytestmark = pytest.mark.django_db

MISSING = 999_999
SIGN_IN = "/console/sign-in"
ROLES = ("admin", "operator", "auditor", "app_owner")


# --- set-up --------------------------------------------------------------------------------------


@pytest.fixture
def people(admin: User, operator: User, auditor: User, app_owner: User) -> dict[str, User]:
    return {"admin": admin, "operator": operator, "auditor": auditor, "app_owner": app_owner}


@pytest.fixture
def owens_key(app_owner: User, owens_app: Application) -> ApiKey:  # noqa: F811
    key, _ = services.api_key_create(actor=actor(app_owner), application=owens_app, name="prod")
    return key


@pytest.fixture
def oscars_key(oscar: User, oscars_app: Application) -> ApiKey:  # noqa: F811
    key, _ = services.api_key_create(actor=actor(oscar), application=oscars_app, name="theirs")
    return key


@pytest.fixture
def owens_grant(
    admin: User,
    owens_app: Application,  # noqa: F811
    approved_model: BaseModel,  # noqa: F811
) -> Grant:
    return services.grant_create(actor=actor(admin), application=owens_app, model=approved_model)


@pytest.fixture
def a_route(admin: User, approved_model: BaseModel) -> Route:  # noqa: F811
    routing.task_class_create(actor=actor(admin), name="general")
    return routing.route_create(
        actor=actor(admin),
        definition=RouteDefinition(
            name="assistant",
            default_class="general",
            rules=[],
            tiers=[TierSpec("general", model_id=approved_model.pk)],
        ),
    )


def url(name: str, *args: int) -> str:
    return reverse(f"console:{name}", args=args)


def html(response: Any) -> str:
    return str(response.content.decode())


def without_csrf(page: str) -> str:
    """The page without its (per-response masked) CSRF token."""
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", page)


def audited(action: str, user: User) -> AuditEvent:
    """The one event of this action, done by this person in the console."""
    event = AuditEvent.objects.get(action=action)
    assert (event.actor_kind, event.actor_id, event.actor_label) == (
        "user",
        str(user.pk),
        user.username,
    )
    return event


def assert_unchanged(response: Any, status: int, before: dict[str, Any]) -> None:
    assert response.status_code == status, html(response)[:2000]
    assert access_state() == before


# --- who may open what ----------------------------------------------------------------------------

# page name → the roles that get 200 on GET (the others 403); app_owner is owen, on his own app.
PAGES: dict[str, tuple[str, ...]] = {
    "applications": ROLES,
    "application-new": ("admin", "operator", "app_owner"),
    "application": ROLES,
    "application-edit": ("admin", "operator", "app_owner"),
    "application-limits": ("admin", "operator"),
    "application-policy": ("admin", "operator"),
    "application-disable": ("admin", "operator"),
    "key-new": ("admin", "operator", "app_owner"),
    "key-revoke": ("admin", "operator", "app_owner"),
    "grant-new": ("admin", "operator"),
    "grant-remove": ("admin", "operator"),
}


@pytest.fixture
def page_url(owens_app: Application, owens_key: ApiKey, owens_grant: Grant) -> Callable[[str], str]:  # noqa: F811
    def build(name: str) -> str:
        if name in ("applications", "application-new"):
            return url(name)
        if name == "key-revoke":
            return url(name, owens_app.pk, owens_key.pk)
        if name == "grant-remove":
            return url(name, owens_app.pk, owens_grant.pk)
        return url(name, owens_app.pk)

    return build


@pytest.mark.parametrize("name", [*PAGES, "application-enable"])
def test_anonymous_is_sent_to_sign_in(name: str, page_url: Callable[[str], str]) -> None:
    target = page_url(name)
    for response in (Client().get(target), Client().post(target)):
        assert response.status_code == 302
        assert response["Location"].startswith(f"{SIGN_IN}?next=")


@pytest.mark.parametrize("name", PAGES)
@pytest.mark.parametrize("role", ROLES)
def test_each_page_opens_for_the_roles_that_may_and_is_403_for_the_others(
    name: str,
    role: str,
    people: dict[str, User],
    console_as: Any,
    page_url: Callable[[str], str],
) -> None:
    response = console_as(people[role]).get(page_url(name))
    assert response.status_code == (200 if role in PAGES[name] else 403), html(response)[:500]
    if response.status_code == 403:
        assert "Not allowed" in html(response)


# Every form or action, and who is refused on POST with nothing changed.
POSTS: dict[str, tuple[str, ...]] = {
    "application-new": ("auditor",),
    "application-edit": ("auditor",),
    "application-limits": ("auditor", "app_owner"),
    "application-policy": ("auditor", "app_owner"),
    "application-disable": ("auditor", "app_owner"),
    "application-enable": ("auditor", "app_owner"),
    "key-new": ("auditor",),
    "key-revoke": ("auditor",),
    "grant-new": ("auditor", "app_owner"),
    "grant-remove": ("auditor", "app_owner"),
}
FILLED = {
    "name": "sneaky",
    "description": "changed",
    "department": "changed",
    "requests_per_minute": "5",
    "data_classification": "public",
    "data_policy": "keep_encrypted",
}


@pytest.mark.parametrize(("name", "refused_roles"), POSTS.items())
def test_refused_roles_get_403_on_post_and_nothing_changes(
    name: str,
    refused_roles: tuple[str, ...],
    people: dict[str, User],
    console_as: Any,
    page_url: Callable[[str], str],
    approved_model: BaseModel,  # noqa: F811
) -> None:
    for role in refused_roles:
        client = console_as(people[role])
        before = access_state()
        response = client.post(page_url(name), {**FILLED, "model_id": approved_model.pk})
        assert_unchanged(response, 403, before)


def test_enable_is_a_post_only_action(
    console_as: Any,
    admin: User,
    owens_app: Application,  # noqa: F811
) -> None:
    assert console_as(admin).get(url("application-enable", owens_app.pk)).status_code == 405


# --- someone else's application is missing ----------------------------------------------------


@pytest.mark.parametrize("name", ["application", "application-edit", "key-new", "key-revoke-other"])
def test_another_owners_application_answers_404_like_a_missing_one(
    name: str,
    console_as: Any,
    app_owner: User,
    oscars_app: Application,  # noqa: F811
    oscars_key: ApiKey,
) -> None:
    client = console_as(app_owner)
    if name == "key-revoke-other":
        theirs = url("key-revoke", oscars_app.pk, oscars_key.pk)
        missing = url("key-revoke", MISSING, oscars_key.pk)
    else:
        theirs, missing = url(name, oscars_app.pk), url(name, MISSING)
    before = access_state()
    for method in ("get", "post"):
        answers = [getattr(client, method)(u, {"name": "x"}) for u in (theirs, missing)]
        assert [a.status_code for a in answers] == [404, 404]
        assert without_csrf(html(answers[0])) == without_csrf(html(answers[1]))
        assert "fraud-screen" not in html(answers[0])
    assert access_state() == before


def test_missing_application_key_and_grant_answer_404(
    console_as: Any,
    admin: User,
    owens_app: Application,  # noqa: F811
    oscars_key: ApiKey,
    owens_grant: Grant,
) -> None:
    client = console_as(admin)
    assert client.get(url("application", MISSING)).status_code == 404
    # a key or grant of another application, through this one's URL
    assert client.get(url("key-revoke", owens_app.pk, oscars_key.pk)).status_code == 404
    assert client.get(url("grant-remove", owens_app.pk, MISSING)).status_code == 404
    assert client.get(url("application-limits", MISSING)).status_code == 404


# --- the list -------------------------------------------------------------------------------------


def test_app_owner_lists_only_their_own_applications(
    console_as: Any,
    app_owner: User,
    owens_app: Application,  # noqa: F811
    oscars_app: Application,  # noqa: F811
) -> None:
    page = html(console_as(app_owner).get(url("applications")))
    assert "discharge-letters" in page
    assert "fraud-screen" not in page
    assert "Create an application" in page


@pytest.mark.parametrize("role", ["admin", "operator", "auditor"])
def test_admins_operators_and_auditors_list_every_application(
    role: str,
    people: dict[str, User],
    console_as: Any,
    owens_app: Application,  # noqa: F811
    oscars_app: Application,  # noqa: F811
) -> None:
    page = html(console_as(people[role]).get(url("applications")))
    assert "discharge-letters" in page
    assert "fraud-screen" in page
    assert ("Create an application" in page) is (role != "auditor")


def test_list_filters_by_name_and_status(
    console_as: Any,
    admin: User,
    owens_app: Application,  # noqa: F811
    oscars_app: Application,  # noqa: F811
) -> None:
    services.application_update(actor=actor(admin), application=oscars_app, status="disabled")
    client = console_as(admin)
    by_name = html(client.get(url("applications"), {"name": "DISCHARGE"}))
    assert "discharge-letters" in by_name and "fraud-screen" not in by_name
    disabled = html(client.get(url("applications"), {"status": "disabled"}))
    assert "fraud-screen" in disabled and "discharge-letters" not in disabled
    nothing = html(client.get(url("applications"), {"name": "nope"}))
    assert "No application matches these filters." in nothing
    # an unknown status is ignored rather than an error
    assert client.get(url("applications"), {"status": "bogus"}).status_code == 200


def test_list_is_paginated_and_keeps_its_filters(
    console_as: Any, admin: User, app_owner: User
) -> None:
    for n in range(30):
        services.application_create(actor=actor(admin), name=f"app-{n:02d}", owner=app_owner)
    client = console_as(admin)
    first = html(client.get(url("applications"), {"name": "app-"}))
    assert "app-00" in first and "app-24" in first and "app-25" not in first
    assert "Page 1 of 2 (30 in all)" in first
    assert "name=app-&amp;page=2" in first
    second = html(client.get(url("applications"), {"name": "app-", "page": "2"}))
    assert "app-25" in second and "app-29" in second and "app-00" not in second


def test_list_counts_active_keys_and_grants(
    console_as: Any,
    admin: User,
    owens_app: Application,  # noqa: F811
    owens_key: ApiKey,
    owens_grant: Grant,
) -> None:
    services.api_key_create(actor=actor(admin), application=owens_app, name="second")
    services.api_key_revoke(actor=actor(admin), key=owens_key)
    response = console_as(admin).get(url("applications"))
    row = response.context["page_obj"].object_list[0]
    assert (row.active_keys, row.grant_count) == (1, 1)


# --- creating an application ---------------------------------------------------------------------


def test_app_owner_creates_their_own_application(console_as: Any, app_owner: User) -> None:
    form = html(console_as(app_owner).get(url("application-new")))
    assert 'name="owner_id"' not in form and 'name="data_policy"' not in form
    response = console_as(app_owner).post(
        url("application-new"),
        {
            "name": " triage-bot ",
            "description": "Sorts referrals",
            "department": "ED",
            "data_classification": "confidential",
        },
    )
    created = Application.objects.get(name="triage-bot")
    assert response.status_code == 302
    assert response["Location"] == url("application", created.pk)
    assert (created.owner, created.department, created.data_classification) == (
        app_owner,
        "ED",
        "confidential",
    )
    assert created.data_policy == "no_content" and created.requests_per_minute is None
    assert audited("application.create", app_owner).object_id == str(created.pk)


def test_admin_creates_an_application_for_an_owner_with_limits_and_policy(
    console_as: Any, admin: User, app_owner: User
) -> None:
    form = html(console_as(admin).get(url("application-new")))
    assert 'name="owner_id"' in form and 'name="monthly_token_budget"' in form
    response = console_as(admin).post(
        url("application-new"),
        {
            "name": "letters",
            "owner_id": str(app_owner.pk),
            "data_classification": "restricted",
            "data_policy": "keep_encrypted",
            "requests_per_minute": "60",
            "monthly_token_budget": "5000000000",
            "tokens_per_minute": "",
        },
    )
    assert response.status_code == 302
    created = Application.objects.get(name="letters")
    assert (created.owner, created.data_policy, created.requests_per_minute) == (
        app_owner,
        "keep_encrypted",
        60,
    )
    assert (created.monthly_token_budget, created.tokens_per_minute) == (5_000_000_000, None)
    assert audited("application.create", admin).details["owner_id"] == app_owner.pk


def test_operator_must_name_an_owner(console_as: Any, operator: User) -> None:
    client = console_as(operator)
    before = access_state()
    response = client.post(url("application-new"), {"name": "letters"})
    assert_unchanged(response, 422, before)
    assert "Not an active app owner or admin." in html(response)
    assert 'value="letters"' in html(response)


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"name": "  "}, 422, "Required."),
        ({"name": "x" * 101}, 422, "At most 100 characters."),
        ({"name": "ok", "requests_per_minute": "lots"}, 422, "A whole number, please."),
        ({"name": "ok", "max_tokens_per_request": "0"}, 422, "≥ 1."),
        ({"name": "ok", "tokens_per_minute": str(2**31)}, 422, f"At most {2**31 - 1}."),
        ({"name": "ok", "owner_id": "abc"}, 422, "A whole number, please."),
        ({"name": "ok", "owner_id": str(MISSING)}, 422, "No such user."),
        ({"name": "ok", "data_classification": "secret"}, 422, "One of public"),
        ({"name": "discharge-letters"}, 409, "already taken"),
    ],
)
def test_bad_application_form_is_refused_with_the_error_and_nothing_changes(
    fields: dict[str, str],
    status: int,
    message: str,
    console_as: Any,
    admin: User,
    owens_app: Application,  # noqa: F811
) -> None:
    client = console_as(admin)
    before = access_state()
    response = client.post(url("application-new"), fields)
    assert_unchanged(response, status, before)
    assert message in html(response)


def test_app_owner_cannot_set_policy_limits_or_another_owner_when_creating(
    console_as: Any,
    app_owner: User,
    oscar: User,  # noqa: F811
) -> None:
    client = console_as(app_owner)
    before = access_state()
    for extra in (
        {"data_policy": "keep_encrypted"},
        {"requests_per_minute": "1000"},
        {"owner_id": str(oscar.pk)},
    ):
        response = client.post(url("application-new"), {"name": "mine", **extra})
        assert_unchanged(response, 403, before)


# --- the application's page ------------------------------------------------------------------------


def test_application_page_shows_facts_limits_policy_grants_and_keys(
    console_as: Any,
    admin: User,
    auditor: User,
    owens_app: Application,  # noqa: F811
    owens_key: ApiKey,
    owens_grant: Grant,
) -> None:
    services.application_update(actor=actor(admin), application=owens_app, tokens_per_minute=9000)
    page = html(console_as(auditor).get(url("application", owens_app.pk)))
    for text in ("discharge-letters", "owen", "cardiology", "9000", "No limit", "Never stored"):
        assert text in page
    assert "base-model" in page  # the grant
    assert owens_key.prefix in page and "prod" in page and "Active" in page
    # an auditor is offered no action
    for action in ("Edit limits", "Add a grant", "Create an API key", "Revoke…", "Remove…"):
        assert action not in page
    assert 'method="post"' not in page.split("</header>", 1)[1]


def test_app_owner_is_offered_keys_but_not_limits_policy_or_grants(
    console_as: Any,
    app_owner: User,
    owens_app: Application,  # noqa: F811
    owens_key: ApiKey,
    owens_grant: Grant,
) -> None:
    page = html(console_as(app_owner).get(url("application", owens_app.pk)))
    assert "Create an API key" in page and "Revoke…" in page and "Edit details" in page
    for action in ("Edit limits", "Change the data policy", "Add a grant", "Remove…", "Disable"):
        assert action not in page


def test_application_page_marks_revoked_and_expired_keys(
    console_as: Any,
    admin: User,
    owens_app: Application,  # noqa: F811
    owens_key: ApiKey,
) -> None:
    services.api_key_revoke(actor=actor(admin), key=owens_key)
    old, _ = services.api_key_create(
        actor=actor(admin), application=owens_app, name="old", expires_in_days=1
    )
    ApiKey.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(days=1))
    page = html(console_as(admin).get(url("application", owens_app.pk)))
    assert "Revoked" in page and "Expired" in page
    assert url("key-revoke", owens_app.pk, owens_key.pk) not in page


# --- details, limits, data policy, status -----------------------------------------------------------


def test_owner_edits_description_and_department(
    console_as: Any,
    app_owner: User,
    owens_app: Application,  # noqa: F811
) -> None:
    client = console_as(app_owner)
    assert 'name="owner_id"' not in html(client.get(url("application-edit", owens_app.pk)))
    response = client.post(
        url("application-edit", owens_app.pk), {"description": "Letters", "department": "ICU"}
    )
    assert response.status_code == 302
    owens_app.refresh_from_db()
    assert (owens_app.description, owens_app.department) == ("Letters", "ICU")
    event = audited("application.update", app_owner)
    assert event.details["changed"]["department"] == {"from": "cardiology", "to": "ICU"}


def test_owner_cannot_give_their_application_away(
    console_as: Any,
    app_owner: User,
    oscar: User,  # noqa: F811
    owens_app: Application,  # noqa: F811
) -> None:
    client = console_as(app_owner)
    before = access_state()
    response = client.post(
        url("application-edit", owens_app.pk),
        {"description": "", "department": "cardiology", "owner_id": str(oscar.pk)},
    )
    assert_unchanged(response, 403, before)


def test_operator_changes_the_owner(
    console_as: Any,
    operator: User,
    oscar: User,  # noqa: F811
    owens_app: Application,  # noqa: F811
) -> None:
    response = console_as(operator).post(
        url("application-edit", owens_app.pk),
        {"description": "", "department": "cardiology", "owner_id": str(oscar.pk)},
    )
    assert response.status_code == 302
    owens_app.refresh_from_db()
    assert owens_app.owner == oscar
    assert audited("application.update", operator).details["changed"]["owner_id"]["to"] == oscar.pk


def test_an_auditor_cannot_be_made_owner(
    console_as: Any,
    admin: User,
    auditor: User,
    owens_app: Application,  # noqa: F811
) -> None:
    client = console_as(admin)
    before = access_state()
    response = client.post(
        url("application-edit", owens_app.pk),
        {"description": "", "department": "", "owner_id": str(auditor.pk)},
    )
    assert_unchanged(response, 422, before)
    assert "Not an active app owner or admin." in html(response)


def test_admin_sets_and_clears_limits(
    console_as: Any,
    admin: User,
    owens_app: Application,  # noqa: F811
) -> None:
    client = console_as(admin)
    limits = {
        "requests_per_minute": "60",
        "tokens_per_minute": "100000",
        "monthly_token_budget": "20000000",
        "max_concurrent_requests": "4",
        "max_tokens_per_request": "2048",
    }
    response = client.post(url("application-limits", owens_app.pk), limits)
    assert response.status_code == 302
    owens_app.refresh_from_db()
    assert [getattr(owens_app, k) for k in limits] == [60, 100000, 20000000, 4, 2048]
    assert owens_app.policy_version == 2
    event = audited("application.update", admin)
    assert event.details["changed"]["requests_per_minute"] == {"from": None, "to": 60}
    client.post(url("application-limits", owens_app.pk), {**limits, "requests_per_minute": ""})
    owens_app.refresh_from_db()
    assert owens_app.requests_per_minute is None and owens_app.max_concurrent_requests == 4
    form = html(client.get(url("application-limits", owens_app.pk)))
    assert 'value="2048"' in form


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("requests_per_minute", "ten", "A whole number, please."),
        ("tokens_per_minute", "-5", "≥ 1."),
        ("max_concurrent_requests", "1.5", "A whole number, please."),
        ("monthly_token_budget", str(2**63), f"At most {2**62}."),
    ],
)
def test_bad_limit_is_a_field_error_and_nothing_changes(
    field: str,
    value: str,
    message: str,
    console_as: Any,
    operator: User,
    owens_app: Application,  # noqa: F811
) -> None:
    client = console_as(operator)
    before = access_state()
    response = client.post(url("application-limits", owens_app.pk), {field: value})
    assert_unchanged(response, 422, before)
    page = html(response)
    assert message in page and f'id="err_{field}"' in page and f'value="{value}"' in page


def test_operator_changes_the_data_policy(
    console_as: Any,
    operator: User,
    owens_app: Application,  # noqa: F811
) -> None:
    response = console_as(operator).post(
        url("application-policy", owens_app.pk),
        {"data_classification": "restricted", "data_policy": "keep_encrypted"},
    )
    assert response.status_code == 302
    owens_app.refresh_from_db()
    assert (owens_app.data_classification, owens_app.data_policy) == (
        "restricted",
        "keep_encrypted",
    )
    changed = audited("application.update", operator).details["changed"]
    assert changed["data_policy"] == {"from": "no_content", "to": "keep_encrypted"}


def test_unknown_data_policy_is_refused(
    console_as: Any,
    admin: User,
    owens_app: Application,  # noqa: F811
) -> None:
    client = console_as(admin)
    before = access_state()
    response = client.post(
        url("application-policy", owens_app.pk),
        {"data_classification": "internal", "data_policy": "keep_forever"},
    )
    assert_unchanged(response, 422, before)
    assert 'id="err_data_policy"' in html(response)


def test_disabling_is_confirmed_first_then_done_and_enabling_undoes_it(
    console_as: Any,
    admin: User,
    owens_app: Application,  # noqa: F811
) -> None:
    client = console_as(admin)
    before = access_state()
    confirm = client.get(url("application-disable", owens_app.pk))
    assert_unchanged(confirm, 200, before)
    assert "Every API key of discharge-letters will be refused" in html(confirm)
    assert "Disable discharge-letters" in html(confirm)
    response = client.post(url("application-disable", owens_app.pk))
    assert response.status_code == 302
    owens_app.refresh_from_db()
    assert owens_app.status == "disabled"
    assert audited("application.update", admin).details["changed"]["status"]["to"] == "disabled"
    assert "Enable the application" in html(client.get(url("application", owens_app.pk)))
    client.post(url("application-enable", owens_app.pk))
    owens_app.refresh_from_db()
    assert owens_app.status == "active"


# --- API keys ------------------------------------------------------------------------------------


def test_owner_creates_a_key_whose_secret_is_shown_once(
    console_as: Any,
    app_owner: User,
    admin: User,
    auditor: User,
    owens_app: Application,  # noqa: F811
) -> None:
    client = console_as(app_owner)
    response = client.post(url("key-new", owens_app.pk), {"name": "production"})
    assert response.status_code == 201
    key = ApiKey.objects.get(name="production")
    secret = response.context["secret"]
    page = html(response)
    assert (
        f'<pre class="secret mono" aria-labelledby="h-secret" tabindex="0">{secret}</pre>' in page
    )
    assert "shown only this once" in page
    assert secret.startswith(f"apk_{key.prefix}_")
    assert services.api_key_authenticate(plaintext=secret) == key
    assert (key.application, key.created_by, key.expires_at) == (owens_app, app_owner, None)
    event = audited("api_key.create", app_owner)
    assert event.object_id == str(key.pk) and secret not in str(event.details)
    # never again: not on the application's page, nor the list, for anyone
    for viewer in (client, console_as(admin), console_as(auditor)):
        for again in (url("application", owens_app.pk), url("applications")):
            shown = html(viewer.get(again))
            assert secret not in shown and secret.split("_", 2)[2] not in shown
    assert key.prefix in html(client.get(url("application", owens_app.pk)))


def test_admin_creates_a_key_that_expires(
    console_as: Any,
    admin: User,
    owens_app: Application,  # noqa: F811
) -> None:
    response = console_as(admin).post(
        url("key-new", owens_app.pk), {"name": "temp", "expires_in_days": "7"}
    )
    assert response.status_code == 201
    key = ApiKey.objects.get(name="temp")
    assert key.expires_at is not None
    audited("api_key.create", admin)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"name": ""}, "name", "Required."),
        ({"name": "k", "expires_in_days": "400"}, "expires_in_days", "Between 1 and 366 days."),
        ({"name": "k", "expires_in_days": "0"}, "expires_in_days", "Between 1 and 366 days."),
        ({"name": "k", "expires_in_days": "soon"}, "expires_in_days", "A whole number, please."),
        ({"name": "k", "expires_in_days": "9" * 30}, "expires_in_days", "At most"),
    ],
)
def test_bad_key_form_is_refused_and_no_key_is_made(
    fields: dict[str, str],
    field: str,
    message: str,
    console_as: Any,
    app_owner: User,
    owens_app: Application,  # noqa: F811
) -> None:
    client = console_as(app_owner)
    before = access_state()
    response = client.post(url("key-new", owens_app.pk), fields)
    assert_unchanged(response, 422, before)
    assert message in html(response) and f'id="err_{field}"' in html(response)
    assert 'class="secret' not in html(response)
    assert not ApiKey.objects.exists()


def test_revoking_a_key_is_confirmed_first_then_done(
    console_as: Any,
    app_owner: User,
    owens_app: Application,  # noqa: F811
) -> None:
    key, secret = services.api_key_create(
        actor=actor(app_owner), application=owens_app, name="prod"
    )
    client = console_as(app_owner)
    before = access_state()
    confirm = client.get(url("key-revoke", owens_app.pk, key.pk))
    assert_unchanged(confirm, 200, before)
    text = html(confirm)
    assert f"The key prod ({key.prefix}…) of discharge-letters" in text
    assert "stop working at their next request" in text
    assert "Revoke the key prod" in text
    response = client.post(url("key-revoke", owens_app.pk, key.pk))
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert services.api_key_authenticate(plaintext=secret) is None
    assert audited("api_key.revoke", app_owner).object_id == str(key.pk)
    # a second time: already revoked, nothing more happens
    again = client.get(url("key-revoke", owens_app.pk, key.pk))
    assert again.status_code == 302
    assert AuditEvent.objects.filter(action="api_key.revoke").count() == 1


def test_operator_revokes_an_owners_key(
    console_as: Any,
    operator: User,
    owens_app: Application,  # noqa: F811
    owens_key: ApiKey,
) -> None:
    response = console_as(operator).post(url("key-revoke", owens_app.pk, owens_key.pk))
    assert response.status_code == 302
    owens_key.refresh_from_db()
    assert owens_key.revoked_at is not None
    audited("api_key.revoke", operator)


# --- grants --------------------------------------------------------------------------------------


def test_grant_form_offers_approved_models_adapters_and_routes(
    console_as: Any,
    admin: User,
    owens_app: Application,  # noqa: F811
    approved_adapters: list[Adapter],  # noqa: F811
    pending_model: BaseModel,  # noqa: F811
    a_route: Route,
) -> None:
    page = html(console_as(admin).get(url("grant-new", owens_app.pk)))
    assert "base-model" in page and "triage (of base-model)" in page and "assistant" in page
    assert "pending-model" not in page


def test_admin_grants_a_model(
    console_as: Any,
    admin: User,
    owens_app: Application,  # noqa: F811
    approved_model: BaseModel,  # noqa: F811
) -> None:
    response = console_as(admin).post(
        url("grant-new", owens_app.pk), {"model_id": str(approved_model.pk), "adapter_id": ""}
    )
    assert response.status_code == 302
    grant = Grant.objects.get(application=owens_app)
    assert (grant.model, grant.adapter, grant.route, grant.created_by) == (
        approved_model,
        None,
        None,
        admin,
    )
    assert audited("grant.create", admin).details["model"] == "base-model"
    owens_app.refresh_from_db()
    assert owens_app.policy_version == 2


def test_operator_grants_an_adapter_and_a_route(
    console_as: Any,
    operator: User,
    owens_app: Application,  # noqa: F811
    approved_model: BaseModel,  # noqa: F811
    approved_adapters: list[Adapter],  # noqa: F811
    a_route: Route,
) -> None:
    client = console_as(operator)
    adapter = approved_adapters[0]
    client.post(
        url("grant-new", owens_app.pk),
        {"model_id": str(approved_model.pk), "adapter_id": str(adapter.pk)},
    )
    client.post(url("grant-new", owens_app.pk), {"route_id": str(a_route.pk)})
    grants = list(Grant.objects.filter(application=owens_app).order_by("id"))
    assert [(g.model, g.adapter, g.route) for g in grants] == [
        (approved_model, adapter, None),
        (None, None, a_route),
    ]
    assert AuditEvent.objects.filter(action="grant.create", actor_id=str(operator.pk)).count() == 2
    page = html(client.get(url("application", owens_app.pk)))
    assert "triage" in page and "assistant" in page


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("nothing", 422, "Name either a model"),
        ("model and route", 422, "Name either a model"),
        ("adapter with route", 422, "Only with model_id."),
        ("not a number", 422, "A whole number, please."),
        ("missing model", 422, "No such model."),
        ("pending model", 409, "not approved"),
        ("adapter of another model", 422, "Not an adapter of this model."),
        ("duplicate", 409, "has this grant already"),
    ],
)
def test_bad_grant_is_refused_with_the_error_and_nothing_changes(
    case: str,
    status: int,
    message: str,
    console_as: Any,
    admin: User,
    owens_app: Application,  # noqa: F811
    owens_grant: Grant,
    approved_model: BaseModel,  # noqa: F811
    pending_model: BaseModel,  # noqa: F811
    foreign_adapter: Adapter,  # noqa: F811
    a_route: Route,
) -> None:
    model, route = str(approved_model.pk), str(a_route.pk)
    fields = {
        "nothing": {"model_id": "", "adapter_id": "", "route_id": ""},
        "model and route": {"model_id": model, "route_id": route},
        "adapter with route": {"adapter_id": str(foreign_adapter.pk), "route_id": route},
        "not a number": {"model_id": "first"},
        "missing model": {"model_id": str(MISSING)},
        "pending model": {"model_id": str(pending_model.pk)},
        "adapter of another model": {"model_id": model, "adapter_id": str(foreign_adapter.pk)},
        "duplicate": {"model_id": model},
    }[case]
    client = console_as(admin)
    before = access_state()
    response = client.post(url("grant-new", owens_app.pk), fields)
    assert_unchanged(response, status, before)
    assert message in html(response)


def test_removing_a_grant_is_confirmed_first_then_done(
    console_as: Any,
    admin: User,
    owens_app: Application,  # noqa: F811
    owens_grant: Grant,
) -> None:
    client = console_as(admin)
    before = access_state()
    confirm = client.get(url("grant-remove", owens_app.pk, owens_grant.pk))
    assert_unchanged(confirm, 200, before)
    text = html(confirm)
    assert "discharge-letters will no longer be allowed to use the model base-model" in text
    assert "from the next request" in text
    response = client.post(url("grant-remove", owens_app.pk, owens_grant.pk))
    assert response.status_code == 302
    assert not Grant.objects.filter(pk=owens_grant.pk).exists()
    assert audited("grant.delete", admin).details["model"] == "base-model"


# --- what the pages must not do -------------------------------------------------------------------


def test_pages_carry_no_inline_script_or_style(
    console_as: Any,
    admin: User,
    page_url: Callable[[str], str],
) -> None:
    client = console_as(admin)
    for name in PAGES:
        page = html(client.get(page_url(name)))
        assert "<script>" not in page and "style=" not in page and "onclick" not in page


def test_inactive_owner_is_not_offered(console_as: Any, admin: User) -> None:
    gone = make_user("gone", Role.APP_OWNER)
    gone.is_active = False
    gone.save()
    page = html(console_as(admin).get(url("application-new")))
    assert "gone (" not in page
