"""The dashboard: fleet health, traffic now, top applications, the month's cost; its figures
refresh every ten seconds without counting as activity (the idle limit still applies)."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.shortcuts import render

from appliance.console import dashboard
from appliance.console.base import ConsoleRequest, console_view


def _figures(request: ConsoleRequest) -> dict[str, Any]:
    actor = request.actor
    return {
        "fleet": dashboard.fleet(actor),
        "traffic": dashboard.traffic(actor),
        "top": dashboard.top_applications(actor),
        "month": dashboard.month_cost(actor),
    }


@console_view()
def dashboard_page(request: ConsoleRequest) -> HttpResponse:
    return render(request, "console/pages/dashboard.html", _figures(request))


@console_view()
def dashboard_figures(request: ConsoleRequest) -> HttpResponse:
    return render(request, "console/fragments/dashboard.html", _figures(request))
