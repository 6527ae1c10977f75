"""Deciding a routed request's task class: the app's hint wins, then the route's rules in order,
then (where the route has an embedding model) the nearest example prompt, then the route's
default class. A decision carries its reason (``rule 2 keyword``, ``semantic 0.82``), which goes
on the usage record; the prompt text never leaves this module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.routing.choices import DecisionSource
from appliance.routing.plans import RoutePlan

TASK_HEADER = "X-Appliance-Task"


@dataclass(frozen=True)
class Decision:
    task_class: str
    source: str
    reason: str


class UnknownTaskClass(Exception):
    """A hint naming a class the route does not know."""


def _text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def prompt_text(body: dict[str, Any]) -> str:
    """What rules and the semantic classifier look at: the last user message of a chat, or the
    (first) prompt of a completion."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    return prompt if isinstance(prompt, str) else ""


def by_hint(plan: RoutePlan, hint: str) -> Decision:
    if hint not in plan.classes:
        raise UnknownTaskClass(hint)
    return Decision(hint, DecisionSource.HINT, "hint")


def by_rules(plan: RoutePlan, text: str, body: dict[str, Any]) -> Decision | None:
    """The first rule that matches, or None."""
    for rule in plan.rules:
        if rule.matcher(text, body):
            return Decision(
                rule.task_class, DecisionSource.RULE, f"rule {rule.position} {rule.kind}"
            )
    return None


def by_default(plan: RoutePlan, why: str = "") -> Decision:
    reason = f"default ({why})" if why else "default"
    return Decision(plan.default_class, DecisionSource.DEFAULT, reason[:100])
