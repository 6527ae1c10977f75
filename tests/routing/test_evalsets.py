"""Evaluation sets: parsing uploaded JSONL into items, and reporting every problem (no database)."""

from __future__ import annotations

import json

import pytest

from appliance.core.errors import ValidationFailed
from appliance.routing.evalsets import (
    MAX_BYTES,
    MAX_ITEMS,
    EvaluationItem,
    evaluation_items_parse,
)
from appliance.routing.scorers import scorer_parse

USER = [{"role": "user", "content": "What is the capital of France?"}]


def line(**item: object) -> str:
    return json.dumps(item)


def good(**overrides: object) -> str:
    item: dict[str, object] = {
        "messages": USER,
        "expected": "Paris",
        "scorer": {"type": "exact"},
    }
    item.update(overrides)
    return json.dumps(item)


def without(key: str) -> str:
    item = json.loads(good())
    del item[key]
    return json.dumps(item)


def problems_of(text: str, *, default_scorer: object | None = None) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        evaluation_items_parse(text, default_scorer=default_scorer)
    assert caught.value.code == "invalid_evaluation_set"
    assert caught.value.status == 422
    return caught.value.fields["jsonl"]


# --- good sets ------------------------------------------------------------------------------------


def test_good_set_parses_into_items_in_order() -> None:
    text = "\n".join(
        [
            good(),
            line(
                messages=[
                    {"role": "system", "content": "Answer with a number."},
                    {"role": "user", "content": "6 x 7?"},
                    {"role": "assistant", "content": "Let me think."},
                    {"role": "user", "content": "Go on."},
                ],
                expected=42,
                scorer={"type": "numeric", "tolerance": 0.5},
            ),
            line(messages=USER, scorer={"type": "regex", "pattern": "(?i)paris"}),
            line(messages=USER, scorer={"type": "json_schema", "schema": {"type": "object"}}),
        ]
    )
    items = evaluation_items_parse(text)
    assert [item.scorer.kind for item in items] == ["exact", "numeric", "regex", "json_schema"]
    assert items[0] == EvaluationItem(
        messages=USER, expected="Paris", scorer=scorer_parse({"type": "exact"})
    )
    assert items[1].expected == 42
    assert items[1].scorer.tolerance == 0.5
    assert [m["role"] for m in items[1].messages] == ["system", "user", "assistant", "user"]
    assert items[2].expected is None


def test_blank_lines_and_crlf_line_ends_are_accepted() -> None:
    text = "\r\n" + good() + "\r\n\r\n   \n\t\n" + good(expected="Lyon") + "\r\n"
    items = evaluation_items_parse(text)
    assert [item.expected for item in items] == ["Paris", "Lyon"]


def test_leading_byte_order_mark_is_ignored() -> None:
    assert len(evaluation_items_parse("\ufeff" + good())) == 1


def test_line_separator_inside_a_json_string_does_not_split_the_line() -> None:
    content = "first\u2028second\u2029third"
    text = json.dumps(
        {
            "messages": [{"role": "user", "content": content}],
            "expected": "x",
            "scorer": {"type": "exact"},
        },
        ensure_ascii=False,
    )
    [item] = evaluation_items_parse(text)
    assert item.messages[0]["content"] == content


@pytest.mark.parametrize("item_id", ["q-17", 17, 0])
def test_id_is_accepted_and_dropped(item_id: object) -> None:
    [item] = evaluation_items_parse(good(id=item_id))
    assert item.expected == "Paris"
    assert not hasattr(item, "id")


def test_messages_are_copied_with_role_and_content_only() -> None:
    [item] = evaluation_items_parse(good())
    assert item.messages == USER
    assert item.messages is not USER


def test_items_without_scorer_use_the_default_scorer() -> None:
    text = "\n".join([without("scorer"), without("scorer")])
    items = evaluation_items_parse(text, default_scorer={"type": "contains"})
    assert [item.scorer.kind for item in items] == ["contains", "contains"]


def test_item_scorer_wins_over_the_default_scorer() -> None:
    text = "\n".join([good(expected=3, scorer={"type": "numeric"}), without("scorer")])
    items = evaluation_items_parse(text, default_scorer={"type": "contains"})
    assert [item.scorer.kind for item in items] == ["numeric", "contains"]


def test_expected_is_checked_against_the_default_scorer() -> None:
    problems = problems_of(without("scorer"), default_scorer={"type": "numeric"})
    assert problems == ["line 1: expected must be a number for the numeric scorer, not a string"]


def test_exactly_max_items_are_accepted() -> None:
    text = "\n".join([without("scorer")] * MAX_ITEMS)
    assert len(evaluation_items_parse(text, default_scorer={"type": "exact"})) == MAX_ITEMS


# --- refusals of the whole set --------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n", "  \n\t\r\n  ", "\ufeff"])
def test_empty_set_is_refused(text: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        evaluation_items_parse(text)
    assert caught.value.code == "invalid_evaluation_set"
    assert caught.value.fields == {"jsonl": ["the evaluation set has no items"]}


def test_more_than_max_items_is_refused() -> None:
    text = "\n".join([good()] * (MAX_ITEMS + 1))
    with pytest.raises(ValidationFailed) as caught:
        evaluation_items_parse(text)
    assert f"at most {MAX_ITEMS}" in caught.value.fields["jsonl"][0]
    assert str(MAX_ITEMS + 1) in caught.value.detail


def test_text_over_max_bytes_is_refused() -> None:
    text = good() + "\n" + " " * MAX_BYTES
    with pytest.raises(ValidationFailed) as caught:
        evaluation_items_parse(text)
    assert caught.value.code == "invalid_evaluation_set"
    assert "larger than 5 MiB" in caught.value.fields["jsonl"][0]


def test_text_over_max_bytes_only_once_utf8_encoded_is_refused() -> None:
    # Fewer characters than MAX_BYTES, but each takes three bytes.
    text = good() + "\n" + "\u20ac" * (MAX_BYTES // 3 + 1)
    assert len(text) < MAX_BYTES
    with pytest.raises(ValidationFailed, match="larger than"):
        evaluation_items_parse(text)


def test_bad_default_scorer_is_refused_under_its_own_field() -> None:
    with pytest.raises(ValidationFailed) as caught:
        evaluation_items_parse(good(), default_scorer={"type": "fuzzy"})
    assert caught.value.code == "invalid_evaluation_set"
    assert list(caught.value.fields) == ["default_scorer"]
    assert "fuzzy" in caught.value.fields["default_scorer"][0]


# --- refusals of one line, with its line number ---------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("{not json", "not valid JSON (Expecting property name enclosed in double quotes"),
        ('{"messages": []', "not valid JSON"),
        ('{"expected": NaN}', "not valid JSON (NaN is not allowed in JSON)"),
        (good()[:-1] + ', "expected": "Lyon"}', 'not valid JSON (duplicate key "expected")'),
        ("[" * 100_000, "not valid JSON"),
        ('["a list"]', "must be a JSON object"),
        ('"a string"', "must be a JSON object"),
        ("42", "must be a JSON object"),
        ("null", "must be a JSON object"),
        (good(answer="x"), 'unknown key "answer" (allowed: expected, id, messages, scorer)'),
        (good(b=1, a=2), 'unknown keys "a", "b"'),
        (good(id=True), "id must be a string or an integer"),
        (good(id=1.5), "id must be a string or an integer"),
        (good(id=None), "id must be a string or an integer"),
        (without("messages"), "messages is missing"),
        (good(messages=[]), "messages must be a non-empty list"),
        (good(messages="hello"), "messages must be a non-empty list"),
        (good(messages=None), "messages must be a non-empty list"),
        (good(messages=[*USER, "hello"]), "messages[1] must be an object with role and content"),
        (
            good(messages=[{"role": "user", "content": "hi", "name": "ada"}]),
            'messages[0] has unknown key "name" (allowed: role, content)',
        ),
        (good(messages=[*USER, {"content": "hi"}]), "messages[1].role is missing"),
        (
            good(messages=[*USER, {"role": "tool", "content": "hi"}]),
            "messages[1].role must be system, user or assistant",
        ),
        (
            good(messages=[*USER, {"role": "USER", "content": "hi"}]),
            "messages[1].role must be system, user or assistant",
        ),
        (good(messages=[{"role": "user"}]), "messages[0].content is missing"),
        (
            good(messages=[{"role": "user", "content": ["hi"]}]),
            "messages[0].content must be a string",
        ),
        (
            good(messages=[{"role": "user", "content": None}]),
            "messages[0].content must be a string",
        ),
        (
            good(messages=[{"role": "system", "content": "Be brief."}]),
            "messages needs at least one user message",
        ),
        (without("scorer"), "scorer is missing and no default scorer was given"),
        (good(scorer={"type": "fuzzy"}), 'scorer type "fuzzy" is unknown'),
        (good(scorer="exact"), "scorer must be a JSON object, not a string"),
        (
            good(scorer={"type": "exact", "strict": True}),
            'unknown option "strict" for the exact scorer',
        ),
        (good(scorer={"type": "regex", "pattern": "("}), "not a valid regular expression"),
        (good(scorer={"type": "regex", "pattern": "a" * 501}), "at most 500 are allowed"),
        (
            good(scorer={"type": "json_schema", "schema": {"type": "strnig"}}),
            "scorer schema is not a valid JSON Schema",
        ),
        (
            good(scorer={"type": "numeric", "tolerance": -1}),
            "tolerance must be a finite number, zero or more",
        ),
        (without("expected"), "expected must be a string for the exact scorer, but it is missing"),
        (good(expected=3), "expected must be a string for the exact scorer, not a number"),
        (good(expected="", scorer={"type": "contains"}), "must not be empty"),
        (good(scorer={"type": "numeric"}), "expected must be a number for the numeric scorer"),
        (good(expected="42", scorer={"type": "numeric"}), "expected must be a number"),
        (good(expected=True, scorer={"type": "numeric"}), "expected must be a number"),
        (good(expected=None, scorer={"type": "regex"}), "expected must be a string (the pattern)"),
        (good(expected="[a-", scorer={"type": "regex"}), "expected pattern is not a valid regular"),
    ],
)
def test_bad_line_is_refused_with_its_line_number(bad: str, problem: str) -> None:
    text = "\n".join([good(), "", bad, good()])
    problems = problems_of(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith("line 3: "), problems
    assert problem in problems[0]


def test_role_problem_reads_as_documented() -> None:
    bad = good(
        messages=[{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}],
    )
    assert problems_of(good() + "\n\n" + bad) == [
        "line 3: messages[1].role must be system, user or assistant"
    ]


def test_line_numbers_count_blank_lines() -> None:
    text = "\n\n\n" + good(expected=3)
    assert problems_of(text) == [
        "line 4: expected must be a string for the exact scorer, not a number"
    ]


def test_line_numbers_count_crlf_lines_once() -> None:
    text = good() + "\r\n" + good() + "\r\n" + good(expected=3)
    assert problems_of(text)[0].startswith("line 3: ")


# --- collecting problems --------------------------------------------------------------------------


def test_problems_from_several_lines_are_all_reported_in_line_order() -> None:
    text = "\n".join(
        [
            good(),
            "{oops",
            good(),
            good(messages=[{"role": "bot", "content": "x"}], expected=7),
            without("scorer"),
        ]
    )
    with pytest.raises(ValidationFailed) as caught:
        evaluation_items_parse(text)
    assert caught.value.detail == "The evaluation set has 5 problems."
    problems = caught.value.fields["jsonl"]
    assert [problem.split(":")[0] for problem in problems] == [
        "line 2",
        "line 4",
        "line 4",
        "line 4",
        "line 5",
    ]
    assert problems[1] == "line 4: messages[0].role must be system, user or assistant"
    assert problems[2] == "line 4: messages needs at least one user message"
    assert problems[3] == "line 4: expected must be a string for the exact scorer, not a number"
    assert problems[4] == "line 5: scorer is missing and no default scorer was given"


def test_one_problem_is_reported_in_the_singular() -> None:
    with pytest.raises(ValidationFailed) as caught:
        evaluation_items_parse(good(expected=3))
    assert caught.value.detail == "The evaluation set has 1 problem."


def test_several_problems_within_one_message_list_are_all_reported() -> None:
    bad = good(
        messages=[
            {"role": "user", "content": 1},
            "x",
            {"role": "narrator", "content": "hi", "extra": 1},
        ]
    )
    assert problems_of(bad) == [
        "line 1: messages[0].content must be a string",
        "line 1: messages[1] must be an object with role and content",
        'line 1: messages[2] has unknown key "extra" (allowed: role, content)',
        "line 1: messages[2].role must be system, user or assistant",
    ]


def test_problems_are_capped_at_fifty() -> None:
    text = "\n".join([good(expected=3)] * 80)
    with pytest.raises(ValidationFailed) as caught:
        evaluation_items_parse(text)
    problems = caught.value.fields["jsonl"]
    assert len(problems) == 50
    assert problems[0].startswith("line 1: ")
    assert problems[-1].startswith("line 50: ")
    assert "more than 50 problems" in caught.value.detail


def test_exactly_fifty_problems_are_all_reported_without_the_cap_note() -> None:
    text = "\n".join([good(expected=3)] * 50 + [good()] * 10)
    with pytest.raises(ValidationFailed) as caught:
        evaluation_items_parse(text)
    assert len(caught.value.fields["jsonl"]) == 50
    assert caught.value.detail == "The evaluation set has 50 problems."


def test_good_lines_do_not_hide_a_bad_one() -> None:
    text = "\n".join([good()] * 100 + ["[]"] + [good()] * 100)
    assert problems_of(text) == ["line 101: must be a JSON object"]
