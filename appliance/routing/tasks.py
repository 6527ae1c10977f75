"""Background work of routing: thin wrappers that call a service."""

from __future__ import annotations

from celery import shared_task

from appliance.routing.costs import cost_refresh
from appliance.routing.evaluation_runs import RUN_TIME_LIMIT, evaluation_run, evaluations_sweep


@shared_task(name="routing.run_evaluation", acks_late=True, time_limit=RUN_TIME_LIMIT)
def run_evaluation(evaluation_id: int) -> str:
    return evaluation_run(evaluation_id=evaluation_id).status


@shared_task(name="routing.sweep_evaluations", ignore_result=True, time_limit=5 * 60)
def sweep_evaluations() -> int:
    """Every 15 minutes: fail evaluations whose worker died, and revoke their keys."""
    return evaluations_sweep()


@shared_task(name="routing.refresh_costs", ignore_result=True, time_limit=15 * 60)
def refresh_costs() -> int:
    """Hourly: re-measure each deployment's effective price per million tokens."""
    return cost_refresh()
