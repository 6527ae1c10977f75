"""What answers cost: a set price per million tokens, or the GPUs' hourly price amortised over
every token the deployment served in the window; the same tokens at a hosted API's list price;
the saving. Exact Decimals, from usage records rolled up as the hourly job does."""

from __future__ import annotations

from collections import Counter
from dataclasses import astuple
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.utils import timezone

from appliance.access import services as access
from appliance.access.models import Application
from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.core.errors import ValidationFailed
from appliance.fleet import services as fleet
from appliance.fleet.deployments import deployment_create
from appliance.fleet.heartbeats import node_heartbeat
from appliance.fleet.models import Deployment, Node
from appliance.gateway.models import UsageRecord
from appliance.gateway.usage import usage_rollup
from appliance.registry.models import BaseModel
from appliance.routing.costs import cost_model_set, cost_refresh, reference_price_save
from appliance.routing.models import CostModel, ReferencePrice
from appliance.routing.reports import cost_report
from tests.access.conftest import approve, import_model
from tests.conftest import actor, make_user
from tests.fleet.conftest import gpu_reading

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)
MISSING = 999_999


# --- the world: a model, a node with four GPUs, two applications ------------------------------


@pytest.fixture
def since() -> datetime:
    """The report window's start: a whole UTC hour two days ago (the cost of a window is counted
    up to now at most, so windows in these tests lie wholly in the past)."""
    return (timezone.now() - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def until(since: datetime) -> datetime:
    return since + 10 * HOUR


@pytest.fixture
def chat(
    admin: User, admin2: User, import_root: Path, django_capture_on_commit_callbacks: Any
) -> BaseModel:
    return approve(
        admin, import_model(admin2, "base-model", import_root, django_capture_on_commit_callbacks)
    )


@pytest.fixture
def node(operator: User) -> Node:
    _, token = fleet.enrollment_token_create(actor=actor(operator), name="gpu-box")
    node, _ = fleet.node_enroll(token=token, name="gpu-box", hostname="gpu-box.local")
    node_heartbeat(node=node, report={"gpus": [gpu_reading(i) for i in range(4)]})
    node.refresh_from_db()
    return node


@pytest.fixture
def deploy(operator: User, chat: BaseModel, node: Node) -> Any:
    """``deploy(name, gpus, created_at=None)`` → a deployment of ``chat`` on those GPUs (tensor
    parallel over all of them), created when said."""

    def build(name: str, gpus: list[int], created_at: datetime | None = None) -> Deployment:
        deployment = deployment_create(
            actor=actor(operator),
            name=name,
            model=chat,
            node=node,
            gpu_indices=gpus,
            tensor_parallel_size=len(gpus),
        )
        if created_at is not None:
            Deployment.objects.filter(pk=deployment.pk).update(created_at=created_at)
            deployment.refresh_from_db()
        return deployment

    return build


@pytest.fixture
def owens_app(admin: User, app_owner: User) -> Application:
    app = access.application_create(actor=actor(admin), name="discharge-letters", owner=app_owner)
    access.api_key_create(actor=actor(app_owner), application=app, name="prod")
    return app


@pytest.fixture
def oscars_app(admin: User) -> Application:
    oscar = make_user("oscar", "app_owner")
    app = access.application_create(actor=actor(admin), name="fraud-screen", owner=oscar)
    access.api_key_create(actor=actor(oscar), application=app, name="prod")
    return app


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


def used(
    app: Application,
    at: datetime,
    *,
    deployment: str,
    prompt: int,
    completion: int,
    task_class: str = "",
    route: str = "",
    status: int = 200,
) -> None:
    """One request as the gateway records it."""
    UsageRecord.objects.create(
        time=at,
        application=app,
        api_key=app.keys.get(),
        endpoint="chat.completions",
        model="base-model",
        deployment=deployment,
        route=route,
        task_class=task_class,
        status=status,
        prompt_tokens=prompt,
        completion_tokens=completion,
        latency_ms=120.0,
    )


def roll_up(until: datetime) -> None:
    """The hourly job, run once after the window (recomputing far enough back to cover it)."""
    usage_rollup(now=until + HOUR, hours=24 * 9)


def rows_of(report: Any) -> list[tuple[Any, ...]]:
    return [astuple(row) for row in report.rows]


def costs_path(since: datetime, until: datetime, **extra: Any) -> str:
    return "/costs?" + urlencode({"since": since.isoformat(), "until": until.isoformat(), **extra})


def audit_actions() -> Counter[str]:
    return Counter(
        AuditEvent.objects.exclude(action__in=["permission.denied", "token.create"]).values_list(
            "action", flat=True
        )
    )


# --- per million -------------------------------------------------------------------------------


def test_per_million_cost_is_tokens_times_price_over_a_million(
    admin: User,
    deploy: Any,
    owens_app: Application,
    oscars_app: Application,
    hosted: ReferencePrice,
    since: datetime,
    until: datetime,
) -> None:
    small = deploy("small", [0])
    cost_model_set(
        actor=actor(admin), deployment=small, kind="per_million", price_per_million=Decimal("2.5")
    )
    used(owens_app, since + HOUR, deployment="small", prompt=100_000, completion=50_000)
    used(owens_app, since + 3 * HOUR, deployment="small", prompt=20_000, completion=30_000)
    used(oscars_app, since + 2 * HOUR, deployment="small", prompt=1_201, completion=600)
    roll_up(until)

    report = cost_report(actor=actor(admin), since=since, until=until)

    assert (report.reference, report.currency) == ("hosted-large", "EUR")
    # 200,000 tokens x 2.5 / 1e6 = 0.5; reference 120,000 x 3 / 1e6 + 80,000 x 15 / 1e6 = 1.56.
    # 1,801 tokens x 2.5 / 1e6 = 0.0045025 → 0.0045; reference 0.003603 + 0.009 = 0.012603 → 0.0126.
    assert rows_of(report) == [
        (
            "discharge-letters",
            "",
            "",
            "base-model",
            "",
            "small",
            2,
            120_000,
            80_000,
            Decimal("0.5000"),
            Decimal("1.5600"),
            Decimal("1.0600"),
        ),
        (
            "fraud-screen",
            "",
            "",
            "base-model",
            "",
            "small",
            1,
            1_201,
            600,
            Decimal("0.0045"),
            Decimal("0.0126"),
            Decimal("0.0081"),
        ),
    ]
    assert report.totals == {
        "requests": 3,
        "prompt_tokens": 121_201,
        "completion_tokens": 80_600,
        "cost": Decimal("0.5045"),
        "reference_cost": Decimal("1.5726"),
        "saving": Decimal("1.0681"),
        "unpriced_rows": 0,
        "idle_gpu_cost": Decimal("0.0000"),
    }


def test_the_cost_report_api_answers_the_same_figures(
    api_as: Any,
    admin: User,
    deploy: Any,
    owens_app: Application,
    hosted: ReferencePrice,
    since: datetime,
    until: datetime,
) -> None:
    small = deploy("small", [0])
    cost_model_set(
        actor=actor(admin), deployment=small, kind="per_million", price_per_million=Decimal("2.5")
    )
    used(owens_app, since + HOUR, deployment="small", prompt=120_000, completion=80_000)
    roll_up(until)

    response = api_as(admin).get(costs_path(since, until))

    assert response.status_code == 200, response.data
    assert (response.data["reference"], response.data["currency"]) == ("hosted-large", "EUR")
    (row,) = response.data["rows"]
    assert (row["application"], row["deployment"], row["requests"]) == (
        "discharge-letters",
        "small",
        1,
    )
    assert (row["prompt_tokens"], row["completion_tokens"]) == (120_000, 80_000)
    assert [Decimal(row[k]) for k in ("cost", "reference_cost", "saving")] == [
        Decimal("0.5000"),
        Decimal("1.5600"),
        Decimal("1.0600"),
    ]
    totals = response.data["totals"]
    assert [Decimal(totals[k]) for k in ("cost", "reference_cost", "saving")] == [
        Decimal("0.5000"),
        Decimal("1.5600"),
        Decimal("1.0600"),
    ]
    assert (totals["requests"], totals["unpriced_rows"]) == (1, 0)


# --- GPU hours ---------------------------------------------------------------------------------


def test_gpu_hour_price_is_amortised_over_every_token_the_deployment_served_in_the_window(
    api_as: Any,
    admin: User,
    app_owner: User,
    deploy: Any,
    owens_app: Application,
    oscars_app: Application,
    hosted: ReferencePrice,
    since: datetime,
    until: datetime,
) -> None:
    # Two GPUs at 2.5 an hour, existing for the last 6 of the window's 10 hours: 30 in all.
    big = deploy("big", [0, 1], created_at=since + 4 * HOUR)
    cost_model_set(
        actor=actor(admin), deployment=big, kind="gpu_hour", gpu_hour_price=Decimal("2.5")
    )
    kw: dict[str, Any] = {"deployment": "big", "route": "assistant"}
    used(owens_app, since + 5 * HOUR, prompt=4_000, completion=2_000, task_class="code", **kw)
    used(owens_app, since + 6 * HOUR, prompt=3_000, completion=3_000, task_class="general", **kw)
    used(oscars_app, since + 7 * HOUR, deployment="big", prompt=9_000, completion=3_000)
    # Outside the window: neither reported nor counted in the tokens the price is spread over.
    used(oscars_app, since - HOUR / 2, deployment="big", prompt=500_000, completion=500_000)
    used(oscars_app, until + HOUR / 2, deployment="big", prompt=500_000, completion=500_000)
    roll_up(until)

    report = cost_report(actor=actor(admin), since=since, until=until)

    # 24,000 tokens served: 30 / 24,000 = 0.00125 a token.
    assert [(r.application, r.task_class, r.route, r.cost) for r in report.rows] == [
        ("discharge-letters", "code", "assistant", Decimal("7.5000")),
        ("discharge-letters", "general", "assistant", Decimal("7.5000")),
        ("fraud-screen", "", "", Decimal("15.0000")),
    ]
    # Reference: 4,000 x 3 + 2,000 x 15 = 42,000 / 1e6; 3,000 x 3 + 3,000 x 15; 9,000 x 3 + 3,000 x 15.
    assert [(r.reference_cost, r.saving) for r in report.rows] == [
        (Decimal("0.0420"), Decimal("-7.4580")),
        (Decimal("0.0540"), Decimal("-7.4460")),
        (Decimal("0.0720"), Decimal("-14.9280")),
    ]
    assert report.totals == {
        "requests": 3,
        "prompt_tokens": 16_000,
        "completion_tokens": 8_000,
        "cost": Decimal("30.0000"),
        "reference_cost": Decimal("0.1680"),
        "saving": Decimal("-29.8320"),
        "unpriced_rows": 0,
        "idle_gpu_cost": Decimal("0.0000"),
    }

    # The owner sees his own rows only, still priced over all the deployment's tokens.
    response = api_as(app_owner).get(costs_path(since, until))
    assert response.status_code == 200, response.data
    assert [(r["task_class"], Decimal(r["cost"])) for r in response.data["rows"]] == [
        ("code", Decimal("7.5000")),
        ("general", Decimal("7.5000")),
    ]
    assert Decimal(response.data["totals"]["cost"]) == Decimal("15.0000")


@pytest.mark.parametrize(
    ("created", "removed", "cost"),
    [
        (-24, None, "12.5000"),  # all 10 hours: 2 GPUs x 2.5 x 10 = 50, a quarter of it
        (4, None, "7.5000"),  # hours 4-10: 30
        (9, None, "1.2500"),  # the last hour: 5
        (-24, 8, "10.0000"),  # removed after 8 hours: 40
        (2, 5, "3.7500"),  # hours 2-5: 15
    ],
    ids=["before-the-window", "during", "last-hour", "removed", "created-and-removed"],
)
def test_gpu_hours_are_those_the_deployment_existed_in_the_window(
    admin: User,
    deploy: Any,
    owens_app: Application,
    oscars_app: Application,
    since: datetime,
    until: datetime,
    created: int,
    removed: int | None,
    cost: str,
) -> None:
    big = deploy("big", [0, 1], created_at=since + created * HOUR)
    if removed is not None:
        Deployment.objects.filter(pk=big.pk).update(removed_at=since + removed * HOUR)
    cost_model_set(
        actor=actor(admin), deployment=big, kind="gpu_hour", gpu_hour_price=Decimal("2.5")
    )
    at = since + max(created, 0) * HOUR + HOUR / 4  # while it existed
    used(owens_app, at, deployment="big", prompt=4_000, completion=2_000)
    used(oscars_app, at, deployment="big", prompt=12_000, completion=6_000)
    roll_up(until)

    report = cost_report(actor=actor(admin), since=since, until=until)

    # owen served a quarter of the 24,000 tokens.
    assert [(r.application, r.cost) for r in report.rows] == [
        ("discharge-letters", Decimal(cost)),
        ("fraud-screen", Decimal(cost) * 3),
    ]


def test_a_set_gpu_count_overrides_the_deployments_gpus(
    admin: User,
    deploy: Any,
    owens_app: Application,
    since: datetime,
    until: datetime,
) -> None:
    big = deploy("big", [0], created_at=since - 24 * HOUR)
    cost_model_set(
        actor=actor(admin),
        deployment=big,
        kind="gpu_hour",
        gpu_hour_price=Decimal("1.25"),
        gpu_count=8,
    )
    used(owens_app, since + HOUR, deployment="big", prompt=1_000, completion=3_000)
    roll_up(until)

    (row,) = cost_report(actor=actor(admin), since=since, until=until).rows

    assert row.cost == Decimal("100.0000")  # 1.25 x 8 GPUs x 10 hours, all of it owen's


# --- unpriced rows, reference prices, who sees what ------------------------------------------


def test_a_deployment_without_a_cost_model_is_reported_unpriced(
    admin: User,
    deploy: Any,
    owens_app: Application,
    hosted: ReferencePrice,
    since: datetime,
    until: datetime,
) -> None:
    small = deploy("small", [0])
    deploy("plain", [1])
    cost_model_set(
        actor=actor(admin), deployment=small, kind="per_million", price_per_million=Decimal("2.5")
    )
    used(owens_app, since + HOUR, deployment="small", prompt=120_000, completion=80_000)
    used(owens_app, since + HOUR, deployment="plain", prompt=10_000, completion=10_000)
    # Refused before any engine (a rate limit): nothing to pay for.
    used(owens_app, since + HOUR, deployment="", prompt=0, completion=0, status=429)
    roll_up(until)

    report = cost_report(actor=actor(admin), since=since, until=until)

    assert [(r.deployment, r.cost, r.reference_cost, r.saving) for r in report.rows] == [
        ("", Decimal(0), Decimal("0.0000"), Decimal("0.0000")),
        ("plain", None, Decimal("0.1800"), None),
        ("small", Decimal("0.5000"), Decimal("1.5600"), Decimal("1.0600")),
    ]
    assert report.totals["cost"] == Decimal("0.5000")
    assert report.totals["reference_cost"] == Decimal("1.7400")
    assert report.totals["saving"] == Decimal("1.0600")
    assert report.totals["unpriced_rows"] == 1
    assert report.totals["requests"] == 3


def test_a_gpu_hour_deployment_that_served_nothing_is_idle_cost_not_a_rows_cost(
    admin: User, deploy: Any, owens_app: Application, since: datetime, until: datetime
) -> None:
    idle = deploy("idle", [0], created_at=since - 24 * HOUR)
    cost_model_set(
        actor=actor(admin), deployment=idle, kind="gpu_hour", gpu_hour_price=Decimal("2")
    )
    used(owens_app, since + HOUR, deployment="idle", prompt=0, completion=0, status=500)
    roll_up(until)

    report = cost_report(actor=actor(admin), since=since, until=until)

    assert [(r.deployment, r.cost) for r in report.rows] == [("idle", None)]
    assert report.totals["unpriced_rows"] == 1
    assert report.reference is None and report.rows[0].reference_cost is None
    # 2 per GPU-hour x 1 GPU x the window's 10 hours, paid for and used by nobody.
    assert report.totals["idle_gpu_cost"] == Decimal("20.0000")


def test_idle_gpu_cost_is_not_shown_to_an_app_owner(
    app_owner: User, admin: User, deploy: Any, since: datetime, until: datetime
) -> None:
    idle = deploy("idle", [0], created_at=since - 24 * HOUR)
    cost_model_set(
        actor=actor(admin), deployment=idle, kind="gpu_hour", gpu_hour_price=Decimal("2")
    )

    report = cost_report(actor=actor(app_owner), since=since, until=until)

    assert report.totals["idle_gpu_cost"] is None


def test_the_default_reference_price_is_used_unless_one_is_named(
    api_as: Any,
    admin: User,
    deploy: Any,
    owens_app: Application,
    since: datetime,
    until: datetime,
) -> None:
    small = deploy("small", [0])
    cost_model_set(
        actor=actor(admin), deployment=small, kind="per_million", price_per_million=Decimal("0.1")
    )
    used(owens_app, since + HOUR, deployment="small", prompt=1_000_000, completion=200_000)
    roll_up(until)
    client = api_as(admin)

    none_yet = client.get(costs_path(since, until)).data
    assert none_yet["reference"] is None
    assert [(r["reference_cost"], r["saving"]) for r in none_yet["rows"]] == [(None, None)]

    before = audit_actions()
    large = client.post(
        "/costs/reference-prices",
        {
            "name": "hosted-large",
            "prompt_per_million": "10",
            "completion_per_million": "30",
            "is_default": True,
        },
    )
    mini = client.post(
        "/costs/reference-prices",
        {
            "name": "hosted-mini",
            "prompt_per_million": "0.15",
            "completion_per_million": "0.6",
            "is_default": True,
        },
    )
    assert (large.status_code, mini.status_code) == (201, 201), (large.data, mini.data)
    assert audit_actions() - before == Counter({"reference_price.create": 2})
    event = AuditEvent.objects.filter(action="reference_price.create").order_by("seq").last()
    assert event is not None
    assert event.details == {
        "name": "hosted-mini",
        "prompt_per_million": "0.1500",
        "completion_per_million": "0.6000",
        "is_default": True,
        "currency": "EUR",
    }
    listed = client.get("/costs/reference-prices").data["items"]
    assert [(p["name"], p["is_default"]) for p in listed] == [
        ("hosted-large", False),
        ("hosted-mini", True),
    ]

    by_default = client.get(costs_path(since, until)).data
    assert by_default["reference"] == "hosted-mini"
    (row,) = by_default["rows"]
    # 1e6 x 0.15 / 1e6 + 200,000 x 0.6 / 1e6 = 0.27; cost 1.2e6 x 0.1 / 1e6 = 0.12.
    assert [Decimal(row[k]) for k in ("cost", "reference_cost", "saving")] == [
        Decimal("0.1200"),
        Decimal("0.2700"),
        Decimal("0.1500"),
    ]

    named = client.get(costs_path(since, until, reference_id=large.data["id"])).data
    assert named["reference"] == "hosted-large"
    (row,) = named["rows"]
    assert [Decimal(row[k]) for k in ("reference_cost", "saving")] == [
        Decimal("16.0000"),
        Decimal("15.8800"),
    ]
    assert client.get(costs_path(since, until, reference_id=MISSING)).status_code == 404


def test_an_owner_sees_only_their_own_applications_rows(
    api_as: Any,
    admin: User,
    app_owner: User,
    auditor: User,
    deploy: Any,
    owens_app: Application,
    oscars_app: Application,
    hosted: ReferencePrice,
    since: datetime,
    until: datetime,
) -> None:
    small = deploy("small", [0])
    cost_model_set(
        actor=actor(admin), deployment=small, kind="per_million", price_per_million=Decimal("1")
    )
    used(owens_app, since + HOUR, deployment="small", prompt=1_000, completion=1_000)
    used(oscars_app, since + HOUR, deployment="small", prompt=3_000, completion=3_000)
    roll_up(until)

    own = api_as(app_owner).get(costs_path(since, until))
    assert own.status_code == 200, own.data
    assert [r["application"] for r in own.data["rows"]] == ["discharge-letters"]
    assert (own.data["totals"]["requests"], own.data["totals"]["prompt_tokens"]) == (1, 1_000)
    theirs = api_as(app_owner).get(costs_path(since, until, application_id=oscars_app.pk))
    assert theirs.status_code == 200 and theirs.data["rows"] == []
    everyone = api_as(auditor).get(costs_path(since, until))
    assert [r["application"] for r in everyone.data["rows"]] == [
        "discharge-letters",
        "fraud-screen",
    ]
    one = api_as(auditor).get(costs_path(since, until, application_id=oscars_app.pk))
    assert [r["application"] for r in one.data["rows"]] == ["fraud-screen"]


@pytest.mark.parametrize("hours", [0, -1])
def test_a_window_that_ends_before_it_starts_is_422(
    api_as: Any, admin: User, since: datetime, hours: int
) -> None:
    until = since + hours * HOUR
    response = api_as(admin).get(costs_path(since, until))
    assert response.status_code == 422, response.data
    assert (response.data["code"], list(response.data["fields"])) == ("validation_error", ["until"])
    with pytest.raises(ValidationFailed):
        cost_report(actor=actor(admin), since=since, until=until)


# --- cost models ---------------------------------------------------------------------------------


def cost_state() -> dict[str, Any]:
    return {
        "costs": list(CostModel.objects.order_by("pk").values()),
        "audit": audit_actions(),
    }


def test_setting_a_cost_model_is_audited_and_measured_at_once(
    api_as: Any, admin: User, deploy: Any
) -> None:
    small = deploy("small", [0])
    client = api_as(admin)
    before = audit_actions()

    response = client.call(
        "put", f"/costs/models/{small.pk}", {"kind": "per_million", "price_per_million": "2.5"}
    )

    assert response.status_code == 200, response.data
    assert Decimal(response.data["effective_per_million"]) == Decimal("2.5000")
    cost = CostModel.objects.get(deployment=small)
    assert (cost.kind, cost.price_per_million, cost.effective_per_million) == (
        "per_million",
        Decimal("2.5000"),
        Decimal("2.5000"),
    )
    assert cost.measured_at is not None
    assert audit_actions() - before == Counter({"cost_model.set": 1})
    event = AuditEvent.objects.get(action="cost_model.set")
    assert (event.object_type, event.object_id) == ("deployment", str(small.pk))
    assert event.details == {
        "deployment": "small",
        "kind": "per_million",
        "gpu_hour_price": None,
        "gpu_count": None,
        "price_per_million": "2.5000",
        "currency": "EUR",
        "created": True,
    }

    again = client.call(
        "put", f"/costs/models/{small.pk}", {"kind": "gpu_hour", "gpu_hour_price": "3"}
    )
    assert again.status_code == 200, again.data
    cost.refresh_from_db()
    assert (cost.kind, cost.gpu_hour_price, cost.price_per_million) == (
        "gpu_hour",
        Decimal("3.0000"),
        None,
    )
    assert CostModel.objects.count() == 1
    assert audit_actions() - before == Counter({"cost_model.set": 2})
    assert (
        AuditEvent.objects.filter(action="cost_model.set")
        .order_by("seq")
        .last()
        .details[  # type: ignore[union-attr]
            "created"
        ]
        is False
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "gpu_hour"}, "gpu_hour_price"),
        ({"kind": "gpu_hour", "price_per_million": "1"}, "gpu_hour_price"),
        ({"kind": "per_million"}, "price_per_million"),
        ({"kind": "per_million", "gpu_hour_price": "1"}, "price_per_million"),
        ({"kind": "per_million", "price_per_million": "-1"}, "price_per_million"),
        ({"kind": "gpu_hour", "gpu_hour_price": "-0.01"}, "gpu_hour_price"),
        ({"kind": "per_million", "price_per_million": "1000001"}, "price_per_million"),
        ({"kind": "gpu_hour", "gpu_hour_price": "2", "gpu_count": 0}, "gpu_count"),
        ({"kind": "flat", "price_per_million": "1"}, "kind"),
        ({"price_per_million": "1"}, "kind"),
    ],
    ids=[
        "gpu-hour-without-price",
        "gpu-hour-with-only-a-per-million-price",
        "per-million-without-price",
        "per-million-with-only-a-gpu-hour-price",
        "negative-per-million",
        "negative-gpu-hour",
        "over-the-maximum",
        "zero-gpus",
        "unknown-kind",
        "no-kind",
    ],
)
def test_a_cost_model_that_cannot_be_used_is_refused_and_the_old_one_kept(
    api_as: Any, admin: User, deploy: Any, body: dict[str, Any], field: str
) -> None:
    small = deploy("small", [0])
    cost_model_set(
        actor=actor(admin), deployment=small, kind="per_million", price_per_million=Decimal("2.5")
    )
    before = cost_state()

    response = api_as(admin).call("put", f"/costs/models/{small.pk}", body)

    assert response.status_code == 422, response.data
    assert response.data["code"] == "validation_error"
    assert field in response.data["fields"], response.data
    assert cost_state() == before


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kind": "gpu_hour"}, "gpu_hour_price"),
        ({"kind": "per_million"}, "price_per_million"),
        ({"kind": "per_million", "price_per_million": Decimal("-1")}, "price_per_million"),
        ({"kind": "gpu_hour", "gpu_hour_price": Decimal("-0.5")}, "gpu_hour_price"),
        ({"kind": "per_million", "price_per_million": Decimal("NaN")}, "price_per_million"),
        ({"kind": "gpu_hour", "gpu_hour_price": Decimal("Infinity")}, "gpu_hour_price"),
        ({"kind": "monthly", "price_per_million": Decimal("1")}, "kind"),
    ],
    ids=["gpu-hour", "per-million", "negative", "negative-gpu-hour", "nan", "infinite", "kind"],
)
def test_the_service_refuses_what_the_api_schema_would_let_through(
    admin: User, deploy: Any, fields: dict[str, Any], field: str
) -> None:
    small = deploy("small", [0])
    before = cost_state()
    with pytest.raises(ValidationFailed) as refused:
        cost_model_set(actor=actor(admin), deployment=small, **fields)
    assert field in refused.value.fields
    assert cost_state() == before


def test_cost_refresh_measures_the_effective_price_per_million_over_the_last_week(
    admin: User,
    deploy: Any,
    owens_app: Application,
    oscars_app: Application,
    since: datetime,
) -> None:
    now = since + 10 * HOUR
    small = deploy("small", [0])
    big = deploy("big", [1], created_at=since)  # 10 hours before ``now``
    idle = deploy("idle", [2], created_at=since - 24 * HOUR)
    cost_model_set(
        actor=actor(admin), deployment=small, kind="per_million", price_per_million=Decimal("2.5")
    )
    cost_model_set(
        actor=actor(admin),
        deployment=big,
        kind="gpu_hour",
        gpu_hour_price=Decimal("3"),
        gpu_count=4,
    )
    cost_model_set(
        actor=actor(admin), deployment=idle, kind="gpu_hour", gpu_hour_price=Decimal("1")
    )
    used(owens_app, since + 2 * HOUR, deployment="big", prompt=5_000_000, completion=1_000_000)
    used(oscars_app, since + 8 * HOUR, deployment="big", prompt=1_500_000, completion=500_000)
    used(owens_app, since + 3 * HOUR, deployment="small", prompt=9_000_000, completion=0)
    # Older than the week measured.
    used(oscars_app, now - timedelta(days=8), deployment="big", prompt=7_000_000, completion=0)
    usage_rollup(now=now, hours=24 * 9)
    before = audit_actions()

    assert cost_refresh(now=now) == 3

    measured = {
        c.deployment.name: (c.effective_per_million, c.measured_tokens, c.measured_at)
        for c in CostModel.objects.select_related("deployment")
    }
    assert measured == {
        "small": (Decimal("2.5000"), 0, now),
        # 3 x 4 GPUs x 10 hours = 120 over 8,000,000 tokens: 15 a million.
        "big": (Decimal("15.0000"), 8_000_000, now),
        "idle": (None, 0, now),
    }
    assert audit_actions() == before  # a measurement, not a decision


def test_a_cost_model_is_deleted_by_its_deployments_id(
    api_as: Any, admin: User, deploy: Any
) -> None:
    first, second = deploy("first", [0]), deploy("second", [1])
    # Set in the other order, so the cost models' own ids are not the deployments' ids.
    for deployment in (second, first):
        cost_model_set(
            actor=actor(admin),
            deployment=deployment,
            kind="per_million",
            price_per_million=Decimal("1"),
        )
    client = api_as(admin)

    for deployment, remaining in ((first, ["second"]), (second, [])):
        response = client.call("delete", f"/costs/models/{deployment.pk}")
        assert response.status_code == 204, response.data
        assert sorted(CostModel.objects.values_list("deployment__name", flat=True)) == remaining


def test_times_without_a_zone_are_422_even_with_gpu_priced_deployments(
    api_as: Any, admin: User, deploy: Any, since: datetime
) -> None:
    cost_model_set(
        actor=actor(admin),
        deployment=deploy("gpus", [0]),
        kind="gpu_hour",
        gpu_hour_price=Decimal(1),
    )

    response = api_as(admin).get("/costs?since=2025-01-01T00:00:00&until=2025-02-01T00:00:00")

    assert response.status_code == 422, response.data
    assert sorted(response.data["fields"]) == ["since", "until"]
