"""The console's routes and evaluations pages: routes (list with filters, detail with rules, chains,
ceiling and timeouts, confirmed delete), task classes, evaluations (list and detail polling while
they run, the report against the target and the baseline, prompts never shown) and applying an
evaluation's winner to a route after a confirmation; each with its permissions per role."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.registry.models import BaseModel
from appliance.routing import evaluations
from appliance.routing.choices import EvaluationStatus, RouteStatus
from appliance.routing.models import Evaluation, EvaluationSet, Route, RouteTier
from tests.access.conftest import approved_model  # noqa: F401
from tests.conftest import actor
from tests.routing.conftest import large_model, route, task_class  # noqa: F401

pytestmark = pytest.mark.django_db

PERSONAS = ["admin", "operator", "auditor", "app_owner"]
EVALUATION_VIEWERS = {"admin", "operator", "auditor"}
MANAGERS = {"admin", "operator"}
PROMPT = "Capital of France?"


def url(name: str, *args: Any) -> str:
    return reverse(f"console:{name}", args=args)


# --- set-up ----------------------------------------------------------------------------------


@pytest.fixture
def assistant(route: Any, large_model: BaseModel, approved_model: BaseModel) -> Route:  # noqa: F811
    """general → large-model, then base-model after 800 ms; code → base-model; one keyword
    rule; a cost ceiling; no semantic classifier."""
    return route(
        "assistant",
        tiers=[
            ("general", large_model, 800),
            ("general", approved_model),
            ("code", approved_model),
        ],
        rules=[("keyword", "code", "def,class"), ("min_chars", "general", "2000")],
        cost_ceiling=Decimal("5"),
    )


@pytest.fixture
def evaluation_set(operator: User) -> EvaluationSet:
    jsonl = json.dumps({"messages": [{"role": "user", "content": PROMPT}], "expected": "Paris"})
    return evaluations.evaluation_set_create(
        actor=actor(operator), name="capitals", jsonl=jsonl, default_scorer={"type": "exact"}
    )


def report_row(name: str, parameters: int, score: float, cost: float | None) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "model",
        "parameters": parameters,
        "items": 4,
        "score": score,
        "errors": 1,
        "latency_p50_ms": 12.0,
        "latency_p95_ms": 30.0,
        "prompt_tokens": 28,
        "completion_tokens": 12,
        "cost": cost,
        "meets_target": score >= 0.7,
    }


@pytest.fixture
def evaluation(
    operator: User,
    evaluation_set: EvaluationSet,
    large_model: BaseModel,  # noqa: F811
    approved_model: BaseModel,  # noqa: F811
) -> Evaluation:
    """A queued run of large-model (the baseline, listed first) against base-model."""
    return evaluations.evaluation_create(
        actor=actor(operator),
        evaluation_set=evaluation_set,
        candidates=["large-model", "base-model"],
        target_score=0.7,
        enqueue=False,
    )


@pytest.fixture
def finished(evaluation: Evaluation) -> Evaluation:
    """The run as its job leaves it (appliance.routing.evaluation_runs): base-model won."""
    report = {
        "target_score": 0.7,
        "currency": "EUR",
        "candidates": [
            report_row("large-model", 7_000_000_000, 0.25, 0.0004),
            report_row("base-model", 1_000_000_000, 0.75, 0.0001),
        ],
        "smallest_meeting": "base-model",
    }
    Evaluation.objects.filter(pk=evaluation.pk).update(
        status=EvaluationStatus.SUCCEEDED, progress=1.0, report=report
    )
    evaluation.refresh_from_db()
    return evaluation


def client_of(request: Any, console_as: Any, persona: str) -> Client:
    return console_as(request.getfixturevalue(persona))


def chain(of: Route, class_name: str) -> list[str]:
    """The model names of a route's tiers for one task class, in order."""
    tiers = RouteTier.objects.filter(route=of, task_class__name=class_name)
    return [t.model.name if t.model else "" for t in tiers.order_by("position")]


# --- who may open what -----------------------------------------------------------------------


@pytest.mark.parametrize("persona", PERSONAS)
def test_each_page_answers_each_role_as_its_capabilities_say(
    request: Any, console_as: Any, assistant: Route, finished: Evaluation, persona: str
) -> None:
    client = client_of(request, console_as, persona)
    everyone = [url("routes"), url("route", assistant.pk), url("task-classes")]
    evaluation_pages = [
        url("evaluations"),
        url("evaluation", finished.pk),
        url("evaluation-report", finished.pk),
        url("evaluation-progress", finished.pk),
    ]
    changing = [
        url("route-delete", assistant.pk),
        url("evaluation-apply", finished.pk) + f"?route={assistant.pk}&task_class=general",
    ]

    for page in everyone:
        assert client.get(page).status_code == 200, page
    for page in evaluation_pages:
        expected = 200 if persona in EVALUATION_VIEWERS else 403
        assert client.get(page).status_code == expected, page
    for page in changing:
        assert client.get(page).status_code == (200 if persona in MANAGERS else 403), page


def test_anonymous_people_are_sent_to_sign_in(assistant: Route, finished: Evaluation) -> None:
    for page in [
        url("routes"),
        url("route", assistant.pk),
        url("route-delete", assistant.pk),
        url("task-classes"),
        url("evaluations"),
        url("evaluation", finished.pk),
        url("evaluation-report", finished.pk),
        url("evaluation-progress", finished.pk),
        url("evaluation-apply", finished.pk),
    ]:
        response = Client().get(page)
        assert response.status_code == 302 and response["Location"].startswith(
            "/console/sign-in"
        ), page


@pytest.mark.parametrize("persona", ["auditor", "app_owner"])
def test_readers_cannot_delete_or_apply(
    request: Any, console_as: Any, assistant: Route, finished: Evaluation, persona: str
) -> None:
    client = client_of(request, console_as, persona)
    events = AuditEvent.objects.count()

    deleted = client.post(url("route-delete", assistant.pk))
    applied = client.post(
        url("evaluation-apply", finished.pk), {"route": assistant.pk, "task_class": "general"}
    )

    assert (deleted.status_code, applied.status_code) == (403, 403)
    assistant.refresh_from_db()
    assert assistant.version == 1 and chain(assistant, "general") == ["large-model", "base-model"]
    assert AuditEvent.objects.count() == events


def test_an_auditor_reads_routes_and_reports_without_the_controls(
    console_as: Any, auditor: User, assistant: Route, finished: Evaluation
) -> None:
    client = console_as(auditor)

    route_html = client.get(url("route", assistant.pk)).content.decode()
    report_html = client.get(url("evaluation", finished.pk)).content.decode()

    assert "large-model" in route_html and url("route-delete", assistant.pk) not in route_html
    assert "base-model" in report_html and url("evaluation-apply", finished.pk) not in report_html


def test_unknown_routes_and_evaluations_are_not_found(console_as: Any, admin: User) -> None:
    client = console_as(admin)

    for page in [
        url("route", 999_999),
        url("route-delete", 999_999),
        url("evaluation", 999_999),
        url("evaluation-progress", 999_999),
        url("evaluation-apply", 999_999),
    ]:
        assert client.get(page).status_code == 404, page


# --- routes ----------------------------------------------------------------------------------


def listed(html: str) -> list[str]:
    return re.findall(r'<td><a href="/console/routes/\d+">([^<]+)</a></td>', html)


def test_the_routes_list_shows_each_routes_shape(
    console_as: Any, app_owner: User, assistant: Route
) -> None:
    html = console_as(app_owner).get(url("routes")).content.decode()

    row = re.search(r"<tr>\s*<td><a [^>]+>assistant</a>.*?</tr>", html, re.S)
    assert row
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0), re.S)
    # name, state, version, default class, task classes, tiers, rules, semantic, ceiling
    assert [c.strip() for c in cells[2:7]] == ["1", "general", "2", "3", "2"]
    assert "Off" in cells[7] and "5.0000 EUR/M" in cells[8]


def test_the_routes_list_filters_and_paginates(
    console_as: Any,
    admin: User,
    route: Any,  # noqa: F811
    large_model: BaseModel,  # noqa: F811
) -> None:
    for i in range(26):
        route(f"route-{i:02d}", tiers=[("general", large_model)])
    route("quiet", tiers=[("general", large_model)], status=RouteStatus.DISABLED)
    client = console_as(admin)

    first = client.get(url("routes"), {"q": "route-"}).content.decode()
    second = client.get(url("routes"), {"q": "route-", "page": 2}).content.decode()
    disabled = client.get(url("routes"), {"status": "disabled"}).content.decode()

    assert len(listed(first)) == 25 and listed(second) == ["route-25"]
    assert "Page 1 of 2" in first and "q=route-&amp;page=2" in first
    assert listed(disabled) == ["quiet"]


def test_a_route_shows_its_rules_in_order_and_each_class_chain(
    console_as: Any, operator: User, assistant: Route
) -> None:
    html = console_as(operator).get(url("route", assistant.pk)).content.decode()

    rules = list(assistant.rules.order_by("position"))
    rule_rows = re.findall(r'<tr><td class="num">(\d+)</td><td class="num">(\d+)</td>', html)
    assert rule_rows == [(str(r.position), str(r.pk)) for r in rules]
    assert "<code>def,class</code>" in html
    general = html.index("<h3>general")
    code = html.index("<h3>code")
    assert general < code  # the default class first
    general_part = html[general:code]
    assert general_part.index("large-model") < general_part.index("base-model")
    assert "800 ms, then the next tier" in general_part
    assert "5.0000 EUR per million tokens" in html


def test_a_route_that_falls_back_to_another_links_to_it(
    console_as: Any,
    admin: User,
    route: Any,  # noqa: F811
    assistant: Route,
    approved_model: BaseModel,  # noqa: F811
) -> None:
    front = route("front", tiers=[("general", approved_model), ("general", assistant)])

    html = console_as(admin).get(url("route", front.pk)).content.decode()

    assert f'<a href="{url("route", assistant.pk)}">assistant</a>' in html
    assert "route (its general chain)" in html


def test_deleting_a_route_asks_first_then_deletes_it(
    console_as: Any, operator: User, assistant: Route
) -> None:
    client = console_as(operator)

    confirm = client.get(url("route-delete", assistant.pk))

    assert "Route assistant (version 1) will be deleted with its 2 rules and 3 tiers" in (
        confirm.content.decode()
    )
    assert Route.objects.filter(pk=assistant.pk).exists()

    done = client.post(url("route-delete", assistant.pk))

    assert done.status_code == 302 and done["Location"] == url("routes")
    assert not Route.objects.filter(pk=assistant.pk).exists()
    event = AuditEvent.objects.get(action="route.delete", object_id=str(assistant.pk))
    assert (event.actor_kind, event.actor_id) == ("user", str(operator.pk))
    assert "Route assistant was deleted." in client.get(url("routes")).content.decode()


def test_a_route_another_falls_back_to_is_not_deleted(
    console_as: Any,
    admin: User,
    route: Any,  # noqa: F811
    assistant: Route,
    approved_model: BaseModel,  # noqa: F811
) -> None:
    route("front", tiers=[("general", approved_model), ("general", assistant)])
    client = console_as(admin)
    events = AuditEvent.objects.count()

    response = client.post(url("route-delete", assistant.pk))

    assert response.status_code == 409
    assert "Route(s) front fall back to assistant." in response.content.decode()
    assert Route.objects.filter(pk=assistant.pk).exists()
    assert AuditEvent.objects.count() == events


def test_task_classes_are_listed_and_searchable(
    console_as: Any,
    app_owner: User,
    assistant: Route,
    task_class: Any,  # noqa: F811
) -> None:
    task_class("summarise", examples=["Summarise this letter.", "Shorten this note."])
    client = console_as(app_owner)

    html = client.get(url("task-classes")).content.decode()
    found = client.get(url("task-classes"), {"q": "summ"}).content.decode()

    names = re.findall(r"<tr><td>([a-z]+)</td>", html)
    assert names == ["code", "general", "summarise"]
    assert re.findall(r"<tr><td>([a-z]+)</td>", found) == ["summarise"]
    assert '<td class="num">2</td>' in found
    assert "Summarise this letter." not in found


# --- evaluations -----------------------------------------------------------------------------


def test_the_evaluations_list_polls_only_runs_in_progress(
    console_as: Any, auditor: User, operator: User, evaluation: Evaluation, finished: Evaluation
) -> None:
    running = evaluations.evaluation_create(
        actor=actor(operator),
        evaluation_set=evaluation.evaluation_set,
        candidates=["base-model", "large-model"],
        target_score=0.5,
        enqueue=False,
    )
    Evaluation.objects.filter(pk=running.pk).update(status=EvaluationStatus.RUNNING, progress=0.4)
    client = console_as(auditor)

    html = client.get(url("evaluations")).content.decode()

    assert "capitals" in html and "large-model, base-model" in html
    assert "large-model: 0.25, base-model: 0.75" in html
    polls = re.findall(r'hx-get="([^"]+)" hx-trigger="every 5s"', html)
    assert polls == [url("evaluation-progress", running.pk)]
    assert 'hx-headers=\'{"X-Console-Background": "1"}\'' in html
    assert "40 %" in html
    only_done = client.get(url("evaluations"), {"status": "succeeded"}).content.decode()
    assert f">#{finished.pk}<" in only_done and f">#{running.pk}<" not in only_done


def test_the_progress_fragment_stops_polling_when_the_run_ends(
    console_as: Any, operator: User, evaluation: Evaluation
) -> None:
    client = console_as(operator)
    Evaluation.objects.filter(pk=evaluation.pk).update(
        status=EvaluationStatus.RUNNING, progress=0.5
    )

    running = client.get(url("evaluation-progress", evaluation.pk)).content.decode()
    Evaluation.objects.filter(pk=evaluation.pk).update(status=EvaluationStatus.FAILED)
    ended = client.get(url("evaluation-progress", evaluation.pk)).content.decode()

    assert 'hx-trigger="every 5s"' in running and "50 %" in running
    assert "hx-trigger" not in ended and "Failed" in ended
    assert "<html" not in running  # a fragment, not a page


def test_a_running_evaluation_page_refreshes_its_report(
    console_as: Any, operator: User, evaluation: Evaluation
) -> None:
    Evaluation.objects.filter(pk=evaluation.pk).update(
        status=EvaluationStatus.RUNNING, progress=0.3
    )

    html = console_as(operator).get(url("evaluation", evaluation.pk)).content.decode()

    assert f'hx-get="{url("evaluation-report", evaluation.pk)}" hx-trigger="every 5s"' in html
    assert "30 % of the answers scored" in html


def test_the_report_compares_candidates_with_the_target_and_the_baseline(
    console_as: Any, auditor: User, finished: Evaluation
) -> None:
    html = console_as(auditor).get(url("evaluation", finished.pk)).content.decode()

    assert '<strong id="winner">base-model</strong>' in html
    rows = re.findall(r"<tr>\s*<td>(large-model|base-model)(.*?)</tr>", html, re.S)
    cells = {name: re.findall(r'<td class="num">([^<]*)</td>', rest) for name, rest in rows}
    # parameters, items, score, against target, against baseline, errors
    assert cells["large-model"][:6] == ["7000000000", "4", "0.25", "-0.45", "baseline", "1"]
    assert cells["base-model"][:6] == ["1000000000", "4", "0.75", "+0.05", "+0.50", "1"]
    assert "-0.000300" in rows[1][1]  # cheaper than the baseline
    assert "hx-trigger" not in html
    # The set's prompts and expected answers are sealed: never shown.
    assert PROMPT not in html and "Paris" not in html


def test_applying_the_winner_asks_first_naming_the_change(
    console_as: Any, operator: User, assistant: Route, finished: Evaluation
) -> None:
    client = console_as(operator)
    detail = client.get(url("evaluation", finished.pk)).content.decode()
    assert f'action="{url("evaluation-apply", finished.pk)}"' in detail

    confirm = client.get(
        url("evaluation-apply", finished.pk), {"route": assistant.pk, "task_class": "code"}
    )

    html = confirm.content.decode()
    assert confirm.status_code == 200
    assert "base-model (model) will become the first tier of task class" in html
    assert re.search(r'<ol id="after"><li>base-model', html)
    assert f'name="route" value="{assistant.pk}"' in html
    assistant.refresh_from_db()
    assert assistant.version == 1 and chain(assistant, "general") == ["large-model", "base-model"]


def test_applying_the_winner_puts_it_first_and_is_audited(
    console_as: Any, operator: User, assistant: Route, finished: Evaluation
) -> None:
    client = console_as(operator)

    done = client.post(
        url("evaluation-apply", finished.pk), {"route": assistant.pk, "task_class": "general"}
    )

    assert done.status_code == 302 and done["Location"] == url("route", assistant.pk)
    assistant.refresh_from_db()
    assert assistant.version == 2 and chain(assistant, "general") == ["base-model", "large-model"]
    event = AuditEvent.objects.get(action="evaluation.apply")
    assert (event.actor_id, event.object_id) == (str(operator.pk), str(assistant.pk))
    assert event.details["target"] == "base-model"
    assert (
        "base-model is now the first tier of general"
        in client.get(done["Location"]).content.decode()
    )


@pytest.mark.parametrize("method", ["get", "post"])
def test_applying_to_no_route_or_class_is_refused_at_the_fields(
    console_as: Any, operator: User, assistant: Route, finished: Evaluation, method: str
) -> None:
    client = console_as(operator)
    events = AuditEvent.objects.count()

    response = getattr(client, method)(
        url("evaluation-apply", finished.pk), {"route": "abc", "task_class": "nope"}
    )

    assert response.status_code == 422
    html = response.content.decode()
    assert 'id="err_route">Choose a route from the list.' in html
    assert 'id="err_task_class">Choose a task class from the list.' in html
    assistant.refresh_from_db()
    assert assistant.version == 1 and AuditEvent.objects.count() == events


@pytest.mark.parametrize("method", ["get", "post"])
def test_an_evaluation_without_a_winner_cannot_be_applied(
    console_as: Any, admin: User, assistant: Route, evaluation: Evaluation, method: str
) -> None:
    client = console_as(admin)
    events = AuditEvent.objects.count()

    response = getattr(client, method)(
        url("evaluation-apply", evaluation.pk), {"route": assistant.pk, "task_class": "general"}
    )

    assert response.status_code == 409
    assert "no candidate that reached its target score" in response.content.decode()
    assistant.refresh_from_db()
    assert assistant.version == 1 and AuditEvent.objects.count() == events
