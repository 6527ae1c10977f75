"""What each kind of rule matches, which text rules look at, and the order of decision: hint,
rules in order, default. Pure functions: no database, no gateway."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.routing.choices import RuleKind
from appliance.routing.classify import (
    UnknownTaskClass,
    by_default,
    by_hint,
    by_rules,
    prompt_text,
)
from appliance.routing.matchers import matcher_for, rule_problem
from appliance.routing.plans import RoutePlan, Rule


def plan(*rules: tuple[str, str, str], default: str = "general") -> RoutePlan:
    compiled = tuple(
        Rule(i + 1, kind, task_class, matcher_for(kind, value))
        for i, (kind, task_class, value) in enumerate(rules)
    )
    classes = frozenset({default, *(r.task_class for r in compiled)})
    return RoutePlan(
        route_id=1,
        name="r",
        version=1,
        created=0,
        default_class=default,
        classes=classes,
        rules=compiled,
    )


def matches(kind: str, value: str, text: str, body: dict[str, Any] | None = None) -> bool:
    return matcher_for(kind, value)(text, body or {})


@pytest.mark.parametrize(
    ("value", "text", "expected"),
    [
        ("summar", "Please SUMMARISE the note", True),
        ("summar", "A summary, please", True),
        ("summar", "presummarised text", False),  # the start of a word only
        ("key points, gist", "Give me the gist", True),
        ("key points", "the key  points", False),  # a phrase as written
        ("c++", "Port this C++ class", True),  # special characters are literal
    ],
)
def test_keyword_rules_match_at_the_start_of_a_word(value: str, text: str, expected: bool) -> None:
    assert matches(RuleKind.KEYWORD, value, text) is expected


def test_regex_rules_search_the_text() -> None:
    assert matches(RuleKind.REGEX, r"\bICD-?10\b", "Map this to ICD10 codes")
    assert not matches(RuleKind.REGEX, r"^invoice", "The invoice")


def test_length_rules_count_characters() -> None:
    assert matches(RuleKind.MIN_CHARS, "5", "12345")
    assert not matches(RuleKind.MIN_CHARS, "6", "12345")
    assert matches(RuleKind.MAX_CHARS, "5", "12345")
    assert not matches(RuleKind.MAX_CHARS, "4", "12345")


@pytest.mark.parametrize(
    "text",
    [
        "Why does this fail?\n```python\nprint(x)\n```",
        "def total(rows):\n    return sum(rows)",
        "SELECT name FROM patients WHERE ward = 4",
        "const x = load();",
        "#include <stdio.h>",
    ],
)
def test_code_is_recognised(text: str) -> None:
    assert matches(RuleKind.HAS_CODE, "", text)


@pytest.mark.parametrize(
    "text",
    [
        "Import the list of patients into the ward system.",
        "Return JSON with the patient's name.",
        "Select the right form from the list.",
    ],
)
def test_prose_is_not_taken_for_code(text: str) -> None:
    assert not matches(RuleKind.HAS_CODE, "", text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What is 12 * 4?", True),
        ("5 mg/kg for a 70 kg patient", True),
        ("Interest of 3.1% on 1200", True),
        ("Seen on 12 March 2026 in room 4 by Dr 7", False),  # figures, no arithmetic
    ],
)
def test_numbers_rules_want_arithmetic(text: str, expected: bool) -> None:
    assert matches(RuleKind.HAS_NUMBERS, "", text) is expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"response_format": {"type": "json_object"}}, True),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, True),
        ({"guided_json": {"type": "object"}}, True),
        ({"response_format": {"type": "text"}}, False),
        ({}, False),
    ],
)
def test_json_schema_rules_look_at_the_requested_format(
    body: dict[str, Any], expected: bool
) -> None:
    assert matches(RuleKind.JSON_SCHEMA, "", "anything", body) is expected


@pytest.mark.parametrize(
    ("kind", "value", "problem"),
    [
        ("sorcery", "", "kind must be one of"),
        (RuleKind.KEYWORD, " , ,", "at least one word"),
        (RuleKind.REGEX, "(unclosed", "does not compile"),
        (RuleKind.REGEX, "x" * 501, "1 to 500 characters"),
        (RuleKind.MIN_CHARS, "ten", "whole number"),
        (RuleKind.MAX_CHARS, "-3", "whole number"),
        (RuleKind.HAS_CODE, "yes", "takes no value"),
    ],
)
def test_unusable_rules_are_named(kind: str, value: str, problem: str) -> None:
    found = rule_problem(kind, value)
    assert found is not None and problem in found


def test_rules_look_at_the_last_user_message() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You summarise notes."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image"}]},
        ]
    }
    assert prompt_text(body) == "second"
    assert prompt_text({"prompt": ["one", "two"]}) == "one"
    assert prompt_text({"prompt": "plain"}) == "plain"
    assert prompt_text({"messages": [{"role": "system", "content": "only"}]}) == ""


def test_the_first_matching_rule_decides() -> None:
    route = plan(
        (RuleKind.KEYWORD, "classification", "classify"),
        (RuleKind.KEYWORD, "summarisation", "summar, classify"),
    )

    decided = by_rules(route, "Classify and summarise this", {})

    assert decided is not None
    assert (decided.task_class, decided.source, decided.reason) == (
        "classification",
        "rule",
        "rule 1 keyword",
    )


def test_no_matching_rule_leaves_the_decision_to_the_default() -> None:
    route = plan((RuleKind.KEYWORD, "code", "python"))

    assert by_rules(route, "hello", {}) is None
    assert by_default(route).reason == "default"
    assert by_default(route, "semantic unavailable").reason == "default (semantic unavailable)"


def test_a_hint_must_name_one_of_the_routes_classes() -> None:
    route = plan((RuleKind.KEYWORD, "code", "python"))

    assert by_hint(route, "code").reason == "hint"
    with pytest.raises(UnknownTaskClass):
        by_hint(route, "poetry")
