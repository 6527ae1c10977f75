"""/api/v1/privacy: reading a request's content (admins) and erasing a subject (admins and the
application's owner), in the one error format."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.access.models import Application
from appliance.audit.models import AuditEvent
from appliance.core.secrets import pseudonym
from appliance.privacy.models import SubjectKey
from tests.privacy.conftest import MESSAGES, SUBJECT, store_exchange


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.data
    assert response.data["code"] == code
    assert set(response.data) == {"code", "detail", "fields", "request_id"}


def test_an_admin_reads_a_requests_content(app: Application, admin: Any, api_as: Any) -> None:
    record = store_exchange(app, request_id="req-00000001")
    response = api_as(admin).get("/privacy/content/req-00000001")
    assert response.status_code == 200, response.data
    assert response.data["request_id"] == "req-00000001"
    [exchange] = response.data["exchanges"]
    assert exchange["prompt"] == MESSAGES
    assert exchange["completions"] == ["ok ok ok "]
    assert exchange["usage_record_id"] == record.pk
    assert exchange["subject"] == pseudonym(SUBJECT)
    assert exchange["erased"] is False
    assert AuditEvent.objects.filter(action="content.read", object_id="req-00000001").exists()


@pytest.mark.parametrize("role", ["operator", "auditor", "app_owner"])
def test_no_one_else_reads_content(
    app: Application, role: str, api_as: Any, request: pytest.FixtureRequest
) -> None:
    store_exchange(app, request_id="req-00000001")
    response = api_as(request.getfixturevalue(role)).get("/privacy/content/req-00000001")
    assert_error(response, 403, "permission_denied")
    assert not AuditEvent.objects.filter(action="content.read").exists()
    assert AuditEvent.objects.filter(action="permission.denied").exists()


def test_reading_anonymously_is_401(app: Application, api_as: Any) -> None:
    assert_error(api_as(None).get("/privacy/content/req-00000001"), 401, "not_authenticated")


def test_unknown_and_erased_content(app: Application, admin: Any, api_as: Any) -> None:
    client = api_as(admin)
    assert_error(client.get("/privacy/content/req-00000404"), 404, "not_found")
    store_exchange(app, request_id="req-00000001")
    erased = client.post("/privacy/subjects/erase", {"application_id": app.pk, "subject": SUBJECT})
    assert erased.status_code == 200
    response = client.get("/privacy/content/req-00000001")
    assert_error(response, 410, "erased")
    assert "erased" in response.data["detail"]


@pytest.mark.parametrize("role", ["admin", "app_owner"])
def test_an_admin_or_the_owner_erases_a_subject(
    app: Application, role: str, api_as: Any, request: pytest.FixtureRequest
) -> None:
    store_exchange(app, request_id="req-00000001")
    client = api_as(request.getfixturevalue(role))
    response = client.post(
        "/privacy/subjects/erase", {"application_id": app.pk, "subject": SUBJECT}
    )
    assert response.status_code == 200, response.data
    assert response.data["subject"] == pseudonym(SUBJECT)
    assert response.data["content_rows"] == 2
    assert response.data["application_id"] == app.pk
    assert SubjectKey.objects.get().erased_at is not None

    again = client.post("/privacy/subjects/erase", {"application_id": app.pk, "subject": SUBJECT})
    assert_error(again, 409, "already_erased")


@pytest.mark.parametrize("role", ["operator", "auditor"])
def test_operators_and_auditors_may_not_erase(
    app: Application, role: str, api_as: Any, request: pytest.FixtureRequest
) -> None:
    store_exchange(app, request_id="req-00000001")
    response = api_as(request.getfixturevalue(role)).post(
        "/privacy/subjects/erase", {"application_id": app.pk, "subject": SUBJECT}
    )
    assert_error(response, 403, "permission_denied")
    assert SubjectKey.objects.get().erased_at is None


def test_another_applications_owner_gets_404(app: Application, oscar: Any, api_as: Any) -> None:
    store_exchange(app, request_id="req-00000001")
    response = api_as(oscar).post(
        "/privacy/subjects/erase", {"application_id": app.pk, "subject": SUBJECT}
    )
    assert_error(response, 404, "not_found")
    assert SubjectKey.objects.get().erased_at is None


def test_erasure_input_is_checked(app: Application, admin: Any, api_as: Any) -> None:
    client = api_as(admin)
    assert_error(
        client.post("/privacy/subjects/erase", {"application_id": app.pk, "subject": "x" * 129}),
        422,
        "validation_error",
    )
    assert_error(
        client.post(
            "/privacy/subjects/erase",
            {"application_id": app.pk, "subject": SUBJECT, "owner_id": 1},
        ),
        422,
        "validation_error",
    )
    assert_error(
        client.post("/privacy/subjects/erase", {"application_id": app.pk, "subject": "never"}),
        404,
        "subject_not_found",
    )
    assert_error(
        client.post("/privacy/subjects/erase", {"application_id": 999999, "subject": SUBJECT}),
        404,
        "not_found",
    )


def test_erasing_without_a_subject_erases_the_applications_own_content(
    app: Application, app_owner: Any, api_as: Any
) -> None:
    store_exchange(app, request_id="req-00000001", subject=None)
    response = api_as(app_owner).post("/privacy/subjects/erase", {"application_id": app.pk})
    assert response.status_code == 200, response.data
    assert response.data["content_rows"] == 2
