"""Console usage pages: rollups per day or hour with totals and a CSV, requests one by one in
keyset pages, and the cost and savings report with its CSV; every role sees them, an app owner
only their own applications' rows, and bad filters are field errors."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from appliance.access import services as access
from appliance.access.models import Application
from appliance.accounts.models import User
from appliance.console.base import PAGE_SIZE
from appliance.fleet import services as fleet
from appliance.fleet.deployments import deployment_create
from appliance.fleet.heartbeats import node_heartbeat
from appliance.fleet.models import Deployment
from appliance.gateway.models import UsageRecord
from appliance.gateway.usage import usage_rollup
from appliance.routing.costs import cost_model_set, reference_price_save
from appliance.routing.models import ReferencePrice
from tests.access.conftest import approve, import_model
from tests.conftest import actor, make_user
from tests.fleet.conftest import gpu_reading

pytestmark = pytest.mark.django_db

PERSONAS = ["admin", "operator", "auditor", "app_owner"]
PAGES = [
    "/console/usage",
    "/console/usage.csv",
    "/console/usage/records",
    "/console/usage/cost",
    "/console/usage/cost.csv",
]
# Two days ago at 10:00 UTC: inside the usage page's default 30 days, wholly in the past.
AT = (
    (timezone.now() - timedelta(days=2))
    .astimezone(UTC)
    .replace(hour=10, minute=0, second=0, microsecond=0)
)
DAY = AT.date().isoformat()


@pytest.fixture
def apps(admin: User, app_owner: User) -> tuple[Application, Application]:
    """owen's application and oscar's, each with a key."""
    mine = access.application_create(actor=actor(admin), name="discharge-letters", owner=app_owner)
    access.api_key_create(actor=actor(app_owner), application=mine, name="prod")
    oscar = make_user("oscar", "app_owner")
    theirs = access.application_create(actor=actor(admin), name="fraud-screen", owner=oscar)
    access.api_key_create(actor=actor(oscar), application=theirs, name="prod")
    return mine, theirs


def used(app: Application, at: datetime = AT, **fields: Any) -> UsageRecord:
    """One request as the gateway records it."""
    return UsageRecord.objects.create(
        time=at,
        application=app,
        api_key=app.keys.get(),
        endpoint="chat.completions",
        model=fields.pop("model", "base-model"),
        status=fields.pop("status", 200),
        prompt_tokens=fields.pop("prompt", 10),
        completion_tokens=fields.pop("completion", 5),
        latency_ms=fields.pop("latency", 100.0),
        **fields,
    )


def roll_up() -> None:
    usage_rollup(now=AT + timedelta(hours=3), hours=72)


def body(response: Any) -> str:
    return response.content.decode()


def csv_rows(response: Any) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith("attachment;")
    return list(csv.reader(io.StringIO(body(response))))


# --- who may open what ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", PAGES)
@pytest.mark.parametrize("persona", PERSONAS)
def test_every_role_sees_the_usage_pages(
    request: Any, console_as: Any, persona: str, url: str
) -> None:
    response = console_as(request.getfixturevalue(persona)).get(url)
    assert response.status_code == 200


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_people_are_sent_to_sign_in(db: None, url: str) -> None:
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/console/sign-in")


# --- usage rollups -------------------------------------------------------------------------------


def test_usage_is_grouped_per_day_application_model_and_task_class_with_totals(
    console_as: Any, admin: User, apps: tuple[Application, Application]
) -> None:
    mine, theirs = apps
    used(mine, prompt=10, completion=5, latency=100.0)
    used(mine, AT + timedelta(hours=1), prompt=20, completion=10, latency=300.0, status=500)
    used(mine, task_class="summary", prompt=1, completion=1)
    used(theirs, model="other-model", prompt=7, completion=3)
    roll_up()

    response = console_as(admin).get("/console/usage")

    assert response.status_code == 200
    rows = {
        (r["day"].isoformat(), r["application__name"], r["model"], r["task_class"]): (
            r["requests"],
            r["errors"],
            r["total_tokens"],
            r["latency_ms_avg"],
        )
        for r in response.context["rows"]
    }
    assert rows == {
        (DAY, "discharge-letters", "base-model", ""): (2, 1, 45, 200.0),
        (DAY, "discharge-letters", "base-model", "summary"): (1, 0, 2, 100.0),
        (DAY, "fraud-screen", "other-model", ""): (1, 0, 10, 100.0),
    }
    totals = response.context["totals"]
    assert (totals["requests"], totals["errors"], totals["total_tokens"]) == (4, 1, 57)
    page = body(response)
    assert 'id="total-requests">4</div>' in page
    assert f"<td>{DAY}</td>" in page


def test_per_hour_shows_one_row_per_hour(
    console_as: Any, admin: User, apps: tuple[Application, Application]
) -> None:
    mine, _ = apps
    used(mine)
    used(mine, AT + timedelta(hours=1))
    roll_up()

    response = console_as(admin).get("/console/usage?period=hour")

    starts = sorted(r["start"] for r in response.context["rows"])
    assert starts == [AT, AT + timedelta(hours=1)]


def test_an_app_owner_sees_only_their_own_applications(
    console_as: Any, app_owner: User, apps: tuple[Application, Application]
) -> None:
    mine, theirs = apps
    used(mine)
    used(theirs)
    roll_up()
    client = console_as(app_owner)

    page = body(client.get("/console/usage"))
    assert "discharge-letters" in page
    assert "fraud-screen" not in page  # not even in the application filter
    filtered = client.get(f"/console/usage?application_id={theirs.pk}")
    assert filtered.status_code == 200
    assert filtered.context["rows"] == []
    assert filtered.context["totals"]["requests"] == 0


def test_the_application_filter_and_date_range_select_rows(
    console_as: Any, admin: User, apps: tuple[Application, Application]
) -> None:
    mine, theirs = apps
    used(mine)
    used(theirs)
    used(theirs, AT - timedelta(days=1))
    roll_up()
    client = console_as(admin)

    one = client.get(f"/console/usage?application_id={mine.pk}").context["rows"]
    assert [r["application__name"] for r in one] == ["discharge-letters"]
    day = client.get(f"/console/usage?since={DAY}&until={DAY}").context["rows"]
    assert sorted(r["application__name"] for r in day) == ["discharge-letters", "fraud-screen"]


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("period=week", "period", "Choose hour or day"),
        ("since=last-tuesday", "since", "Give a date"),
        ("since=2026-05-02&until=2026-05-01", "until", "Must not be before"),
        ("application_id=abc", "application_id", "Choose one from the list"),
        ("model=" + "m" * 101, "model", "At most 100 characters"),
    ],
)
@pytest.mark.parametrize("url", ["/console/usage", "/console/usage.csv"])
def test_bad_usage_filters_are_field_errors(
    console_as: Any, admin: User, url: str, query: str, field: str, message: str
) -> None:
    response = console_as(admin).get(f"{url}?{query}")
    assert response.status_code == 422
    assert f'id="err_{field}"' in body(response)
    assert message in body(response)


def test_the_usage_csv_has_a_header_and_one_line_per_row_and_defuses_formulas(
    console_as: Any, admin: User, apps: tuple[Application, Application]
) -> None:
    mine, theirs = apps
    used(mine, model='=HYPERLINK("http://evil.example","x")')
    used(theirs, model="+cmd", latency=50.0)
    used(theirs, model="-2+3")
    used(theirs, model="@SUM(A1)")
    roll_up()

    rows = csv_rows(console_as(admin).get("/console/usage.csv"))

    assert rows[0] == [
        "period",
        "start_utc",
        "application",
        "model",
        "task_class",
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "latency_ms_avg",
    ]
    assert len(rows) == 5
    models = {row[3] for row in rows[1:]}
    assert models == {'\'=HYPERLINK("http://evil.example","x")', "'+cmd", "'-2+3", "'@SUM(A1)"}
    cmd = next(row for row in rows[1:] if row[3] == "'+cmd")
    assert cmd == [
        "day",
        AT.replace(hour=0).isoformat(),
        "fraud-screen",
        "'+cmd",
        "",
        "1",
        "0",
        "10",
        "5",
        "15",
        "50.0",
    ]


def test_the_usage_csv_of_an_app_owner_holds_their_rows_only(
    console_as: Any, app_owner: User, apps: tuple[Application, Application]
) -> None:
    mine, theirs = apps
    used(mine)
    used(theirs)
    roll_up()
    rows = csv_rows(console_as(app_owner).get("/console/usage.csv"))
    assert [row[2] for row in rows[1:]] == ["discharge-letters"]


# --- request records -----------------------------------------------------------------------------


def test_requests_are_listed_newest_first_without_any_text(
    console_as: Any, auditor: User, apps: tuple[Application, Application]
) -> None:
    mine, theirs = apps
    used(mine, status=429, route="triage", task_class="summary", route_reason="rule 1")
    used(theirs, AT + timedelta(minutes=5), latency=1234.0, completion=77)

    response = console_as(auditor).get("/console/usage/records")

    records = response.context["page"].records
    assert [(r.application.name, r.status) for r in records] == [
        ("fraud-screen", 200),
        ("discharge-letters", 429),
    ]
    page = body(response)
    assert "1234 ms" in page
    assert '<span class="badge warn">429</span>' in page
    assert "triage" in page and "summary" in page and "rule 1" in page


def test_an_app_owner_sees_only_their_own_requests(
    console_as: Any, app_owner: User, apps: tuple[Application, Application]
) -> None:
    mine, theirs = apps
    used(mine)
    used(theirs)
    client = console_as(app_owner)

    records = client.get("/console/usage/records").context["page"].records
    assert [r.application_id for r in records] == [mine.pk]
    other = client.get(f"/console/usage/records?application_id={theirs.pk}")
    assert other.context["page"].records == []


def test_request_filters_select_by_status_and_time(
    console_as: Any, admin: User, apps: tuple[Application, Application]
) -> None:
    mine, _ = apps
    used(mine, status=500)
    used(mine, AT + timedelta(hours=1))
    client = console_as(admin)

    failed = client.get("/console/usage/records?status=500").context["page"].records
    assert [r.status for r in failed] == [500]
    since = (AT + timedelta(minutes=30)).replace(tzinfo=None).isoformat(timespec="minutes")
    later = client.get(f"/console/usage/records?since={since}").context["page"].records
    assert [r.time for r in later] == [AT + timedelta(hours=1)]


def test_request_pages_follow_keyset_cursors_without_repeats_or_gaps(
    console_as: Any, admin: User, apps: tuple[Application, Application]
) -> None:
    mine, _ = apps
    # Pairs share a time, so the id breaks ties exactly as the API's cursor does.
    made = [used(mine, AT + timedelta(seconds=i // 2)) for i in range(2 * PAGE_SIZE + 3)]
    expected = [r.pk for r in sorted(made, key=lambda r: (r.time, r.pk), reverse=True)]
    client = console_as(admin)

    seen: list[int] = []
    response = client.get("/console/usage/records")
    pages = [response]
    while response.context["page"].older:
        response = client.get(f"/console/usage/records?before={response.context['page'].older}")
        pages.append(response)
    for page in pages:
        seen += [r.pk for r in page.context["page"].records]

    assert seen == expected
    assert len(pages) == 3
    middle = pages[1].context["page"]
    back = client.get(f"/console/usage/records?after={pages[2].context['page'].newer}")
    assert [r.pk for r in back.context["page"].records] == [r.pk for r in middle.records]
    assert 'rel="next"' in body(pages[0]) and 'rel="prev"' not in body(pages[0])


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("status=abc", "status", "An HTTP status"),
        ("status=99", "status", "An HTTP status"),
        ("since=whenever", "since", "Give a date and time"),
        ("application_id=1x", "application_id", "Choose one from the list"),
        ("route=" + "r" * 64, "route", "At most 63 characters"),
    ],
)
def test_bad_request_filters_are_field_errors(
    console_as: Any, admin: User, query: str, field: str, message: str
) -> None:
    response = console_as(admin).get(f"/console/usage/records?{query}")
    assert response.status_code == 422
    assert f'id="err_{field}"' in body(response)
    assert message in body(response)


def test_a_bad_cursor_shows_the_newest_requests(
    console_as: Any, admin: User, apps: tuple[Application, Application]
) -> None:
    used(apps[0])
    response = console_as(admin).get("/console/usage/records?before=nonsense")
    assert response.status_code == 200
    assert len(response.context["page"].records) == 1


# --- cost report ---------------------------------------------------------------------------------


@pytest.fixture
def hosted(admin: User) -> ReferencePrice:
    """The default reference price: 3 per million prompt tokens, 15 per million completion."""
    return reference_price_save(
        actor=actor(admin),
        name="hosted-large",
        prompt_per_million=Decimal("3"),
        completion_per_million=Decimal("15"),
        is_default=True,
    )


@pytest.fixture
def small(
    admin: User,
    admin2: User,
    operator: User,
    import_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> Deployment:
    """A deployment priced at 2.5 per million tokens."""
    capture = django_capture_on_commit_callbacks
    model = approve(admin, import_model(admin2, "base-model", import_root, capture))
    _, token = fleet.enrollment_token_create(actor=actor(operator), name="gpu-box")
    node, _ = fleet.node_enroll(token=token, name="gpu-box", hostname="gpu-box.local")
    node_heartbeat(node=node, report={"gpus": [gpu_reading(0)]})
    node.refresh_from_db()
    deployment = deployment_create(
        actor=actor(operator),
        name="small",
        model=model,
        node=node,
        gpu_indices=[0],
        tensor_parallel_size=1,
    )
    cost_model_set(
        actor=actor(admin),
        deployment=deployment,
        kind="per_million",
        price_per_million=Decimal("2.5"),
    )
    return deployment


def test_the_cost_report_shows_cost_reference_cost_and_saving_per_row_and_in_total(
    console_as: Any,
    admin: User,
    apps: tuple[Application, Application],
    hosted: ReferencePrice,
    small: Deployment,
) -> None:
    mine, theirs = apps
    used(mine, deployment="small", prompt=120_000, completion=80_000)
    used(theirs, deployment="small", prompt=1_201, completion=600)
    roll_up()

    response = console_as(admin).get(f"/console/usage/cost?since={DAY}&until={DAY}")

    assert response.status_code == 200
    report = response.context["report"]
    figures = [(r.application, r.cost, r.reference_cost, r.saving) for r in report.rows]
    assert figures == [
        ("discharge-letters", Decimal("0.5000"), Decimal("1.5600"), Decimal("1.0600")),
        ("fraud-screen", Decimal("0.0045"), Decimal("0.0126"), Decimal("0.0081")),
    ]
    page = body(response)
    assert 'id="total-cost">0.5045 EUR</div>' in page
    assert 'id="total-saving">1.0681 EUR</div>' in page
    assert '<td class="num">1.0600</td>' in page


def test_an_app_owner_sees_the_cost_of_their_own_applications_only(
    console_as: Any,
    app_owner: User,
    apps: tuple[Application, Application],
    hosted: ReferencePrice,
) -> None:
    mine, theirs = apps
    used(mine, prompt=1_000_000, completion=0)
    used(theirs, prompt=2_000_000, completion=0)
    roll_up()

    response = console_as(app_owner).get(f"/console/usage/cost?since={DAY}&until={DAY}")

    report = response.context["report"]
    assert [(r.application, r.reference_cost) for r in report.rows] == [
        ("discharge-letters", Decimal("3.0000"))
    ]
    assert report.totals["idle_gpu_cost"] is None
    assert "fraud-screen" not in body(response)


def test_the_cost_report_covers_this_month_by_default(console_as: Any, admin: User) -> None:
    response = console_as(admin).get("/console/usage/cost")

    today = timezone.localdate()
    assert response.context["typed"]["since"] == today.replace(day=1).isoformat()
    assert response.context["typed"]["until"] == today.isoformat()
    assert response.context["report"].since.date() == today.replace(day=1)


def test_the_cost_csv_has_a_header_one_line_per_row_and_defuses_formulas(
    console_as: Any, admin: User, app_owner: User, hosted: ReferencePrice
) -> None:
    evil = access.application_create(actor=actor(admin), name="=cmd|' /C calc'!A0", owner=app_owner)
    access.api_key_create(actor=actor(app_owner), application=evil, name="prod")
    used(evil, prompt=1_000_000, completion=0, task_class="@summary")
    roll_up()

    rows = csv_rows(console_as(admin).get(f"/console/usage/cost.csv?since={DAY}&until={DAY}"))

    assert rows[0][:3] == ["application", "task_class", "route"]
    assert rows[0][-5:] == ["cost", "reference_cost", "saving", "currency", "reference"]
    assert len(rows) == 2
    line = dict(zip(rows[0], rows[1], strict=True))
    assert line["application"] == "'=cmd|' /C calc'!A0"
    assert line["task_class"] == "'@summary"
    assert (line["requests"], line["reference_cost"], line["cost"]) == ("1", "3.0000", "")
    assert (line["currency"], line["reference"]) == ("EUR", "hosted-large")


@pytest.mark.parametrize(
    ("query", "field", "message", "status"),
    [
        ("since=first-of-may", "since", "Give a date", 422),
        ("since=2026-05-02&until=2026-04-01", "until", "must be after", 422),
        ("reference_id=abc", "reference_id", "Choose one from the list", 422),
        ("reference_id=999999", "reference_id", "No such reference price", 422),
        ("application_id=x", "application_id", "Choose one from the list", 422),
    ],
)
@pytest.mark.parametrize("url", ["/console/usage/cost", "/console/usage/cost.csv"])
def test_bad_cost_filters_are_field_errors(
    console_as: Any, admin: User, url: str, query: str, field: str, message: str, status: int
) -> None:
    response = console_as(admin).get(f"{url}?{query}")
    assert response.status_code == status
    assert f'id="err_{field}"' in body(response)
    assert message in body(response)
