"""Scorers: parsing specs, checking expected values, and scoring answers (no database)."""

from __future__ import annotations

import dataclasses

import pytest

from appliance.routing.scorers import (
    OUTPUT_LIMIT,
    SCORER_KINDS,
    Scorer,
    ScorerInvalid,
    expected_check,
    scorer_parse,
)

ODD_OUTPUTS = [
    "",
    "   \n\t ",
    "\x00\x01\x02",
    "\ud800 lone surrogate",
    "😀" * 10,
    "[" * 50_000,
    "{" * 5_000 + "}" * 5_000,
    "9" * 100_000,
    "1e999999",
    "NaN",
    "Infinity",
    "```json\n```",
    "```",
    "x" * 1_000_000,
]


def scorer(**spec: object) -> Scorer:
    return scorer_parse(spec)


# --- spec parsing, common to every kind ---------------------------------------------------------


def test_scorer_kinds_lists_the_five_kinds() -> None:
    assert SCORER_KINDS == ("exact", "contains", "regex", "json_schema", "numeric")


@pytest.mark.parametrize("spec", [None, "exact", ["exact"], 1, True])
def test_spec_that_is_not_an_object_is_refused(spec: object) -> None:
    with pytest.raises(ScorerInvalid, match="must be a JSON object"):
        scorer_parse(spec)


def test_spec_without_type_is_refused() -> None:
    with pytest.raises(ScorerInvalid, match="type is missing"):
        scorer_parse({"case_sensitive": True})


@pytest.mark.parametrize("kind", ["fuzzy", "EXACT", "", 3, None, ["exact"]])
def test_unknown_type_is_refused_with_the_allowed_kinds(kind: object) -> None:
    with pytest.raises(ScorerInvalid, match="is unknown; it must be one of exact, contains"):
        scorer_parse({"type": kind})


@pytest.mark.parametrize(
    ("spec", "option"),
    [
        ({"type": "exact", "pattern": "x"}, "pattern"),
        ({"type": "contains", "tolerance": 1}, "tolerance"),
        ({"type": "regex", "case_sensitive": True}, "case_sensitive"),
        ({"type": "json_schema", "schema": {}, "strict": True}, "strict"),
        ({"type": "numeric", "schema": {}}, "schema"),
    ],
)
def test_unknown_option_key_is_refused_and_named(spec: dict[str, object], option: str) -> None:
    with pytest.raises(ScorerInvalid, match=f'unknown option "{option}"'):
        scorer_parse(spec)


def test_scorer_is_frozen() -> None:
    parsed = scorer(type="exact")
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.kind = "contains"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"type": "exact"}, "yes"),
        ({"type": "contains"}, "yes"),
        ({"type": "regex", "pattern": "y"}, None),
        ({"type": "regex"}, "y"),
        ({"type": "json_schema", "schema": {"type": "object"}}, None),
        ({"type": "numeric", "tolerance": 0.5}, 3),
    ],
)
@pytest.mark.parametrize("output", ODD_OUTPUTS)
def test_every_scorer_scores_odd_outputs_without_raising(
    spec: dict[str, object], expected: object, output: str
) -> None:
    assert scorer_parse(spec).score(output, expected) in (0.0, 1.0)


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "exact"},
        {"type": "contains"},
        {"type": "regex"},
        {"type": "numeric"},
    ],
)
@pytest.mark.parametrize("expected", [None, 3, "x", [1], {"a": 1}, True, float("nan")])
def test_score_with_an_unfit_expected_returns_zero_or_one_without_raising(
    spec: dict[str, object], expected: object
) -> None:
    assert scorer_parse(spec).score("x 3", expected) in (0.0, 1.0)


def test_score_of_a_non_string_output_is_zero() -> None:
    assert scorer(type="contains").score(None, "x") == 0.0  # type: ignore[arg-type]


# --- exact ----------------------------------------------------------------------------------------


def test_exact_same_text_scores_one() -> None:
    assert scorer(type="exact").score("Paris", "Paris") == 1.0


def test_exact_different_text_scores_zero() -> None:
    assert scorer(type="exact").score("Lyon", "Paris") == 0.0


def test_exact_ignores_surrounding_whitespace() -> None:
    assert scorer(type="exact").score("  Paris\n", "\tParis ") == 1.0


def test_exact_keeps_inner_whitespace() -> None:
    assert scorer(type="exact").score("New  York", "New York") == 0.0


def test_exact_is_case_insensitive_by_default() -> None:
    assert scorer(type="exact").score("PARIS", "paris") == 1.0


def test_exact_case_sensitive_refuses_other_case() -> None:
    strict = scorer(type="exact", case_sensitive=True)
    assert strict.score("PARIS", "paris") == 0.0
    assert strict.score("paris", "paris") == 1.0


def test_exact_case_sensitive_false_is_the_default() -> None:
    assert scorer(type="exact", case_sensitive=False) == scorer(type="exact")


def test_exact_does_not_accept_a_longer_answer() -> None:
    assert scorer(type="exact").score("Paris, France", "Paris") == 0.0


def test_exact_empty_output_scores_zero() -> None:
    assert scorer(type="exact").score("", "Paris") == 0.0


def test_exact_empty_expected_matches_blank_output() -> None:
    assert scorer(type="exact").score("  \n", "") == 1.0


def test_exact_examines_only_the_first_output_limit_characters() -> None:
    answer = "a" * OUTPUT_LIMIT
    assert scorer(type="exact").score(answer + "b", answer) == 1.0


@pytest.mark.parametrize("value", ["true", 1, None, [True]])
def test_case_sensitive_that_is_not_a_boolean_is_refused(value: object) -> None:
    with pytest.raises(ScorerInvalid, match="case_sensitive must be true or false"):
        scorer_parse({"type": "exact", "case_sensitive": value})


@pytest.mark.parametrize("kind", ["exact", "contains"])
@pytest.mark.parametrize("expected", [None, 3, 2.5, True, ["Paris"], {"a": "b"}])
def test_text_scorer_refuses_expected_that_is_not_a_string(kind: str, expected: object) -> None:
    with pytest.raises(ScorerInvalid, match=f"expected must be a string for the {kind} scorer"):
        expected_check(scorer(type=kind), expected)


def test_text_scorer_says_when_expected_is_missing() -> None:
    with pytest.raises(ScorerInvalid, match="missing"):
        expected_check(scorer(type="exact"), None)


def test_exact_accepts_a_string_expected() -> None:
    expected_check(scorer(type="exact"), "Paris")


# --- contains -------------------------------------------------------------------------------------


def test_contains_expected_inside_output_scores_one() -> None:
    assert scorer(type="contains").score("The capital is Paris.", "Paris") == 1.0


def test_contains_expected_absent_scores_zero() -> None:
    assert scorer(type="contains").score("The capital is Lyon.", "Paris") == 0.0


def test_contains_is_case_insensitive_by_default() -> None:
    assert scorer(type="contains").score("THE CAPITAL IS PARIS", "paris") == 1.0


def test_contains_case_sensitive_refuses_other_case() -> None:
    strict = scorer(type="contains", case_sensitive=True)
    assert strict.score("THE CAPITAL IS PARIS", "paris") == 0.0
    assert strict.score("the capital is paris", "paris") == 1.0


def test_contains_empty_output_scores_zero() -> None:
    assert scorer(type="contains").score("", "Paris") == 0.0


def test_contains_expected_past_the_output_limit_scores_zero() -> None:
    assert scorer(type="contains").score("x" * OUTPUT_LIMIT + "Paris", "Paris") == 0.0


def test_contains_expected_just_inside_the_output_limit_scores_one() -> None:
    answer = "x" * (OUTPUT_LIMIT - 5) + "Paris" + "y" * 100
    assert scorer(type="contains").score(answer, "Paris") == 1.0


@pytest.mark.parametrize("expected", ["", "   "])
def test_contains_refuses_empty_expected_that_every_answer_would_contain(expected: str) -> None:
    with pytest.raises(ScorerInvalid, match="must not be empty"):
        expected_check(scorer(type="contains"), expected)


# --- regex ----------------------------------------------------------------------------------------


def test_regex_own_pattern_matching_scores_one() -> None:
    assert scorer(type="regex", pattern=r"\bParis\b").score("It is Paris.", None) == 1.0


def test_regex_own_pattern_not_matching_scores_zero() -> None:
    assert scorer(type="regex", pattern=r"\bParis\b").score("It is Parisian.", None) == 0.0


def test_regex_matches_anywhere_in_the_output() -> None:
    assert scorer(type="regex", pattern="[0-9]{3}").score("code 123 here", None) == 1.0


def test_regex_anchors_are_honoured() -> None:
    assert scorer(type="regex", pattern="^yes$").score("well, yes", None) == 0.0


def test_regex_is_case_sensitive_unless_the_pattern_says_otherwise() -> None:
    assert scorer(type="regex", pattern="paris").score("PARIS", None) == 0.0
    assert scorer(type="regex", pattern="(?i)paris").score("PARIS", None) == 1.0


def test_regex_without_own_pattern_uses_expected_as_pattern() -> None:
    assert scorer(type="regex").score("answer: 42", r"\d+") == 1.0
    assert scorer(type="regex").score("answer: none", r"\d+") == 0.0


def test_regex_own_pattern_wins_over_expected() -> None:
    assert scorer(type="regex", pattern="cat").score("a cat", "dog") == 1.0


def test_regex_empty_output_scores_zero() -> None:
    assert scorer(type="regex", pattern="x").score("", None) == 0.0


def test_regex_examines_only_the_first_output_limit_characters() -> None:
    parsed = scorer(type="regex", pattern="needle")
    assert parsed.score("x" * OUTPUT_LIMIT + "needle", None) == 0.0
    assert parsed.score("x" * (OUTPUT_LIMIT - 6) + "needle", None) == 1.0


def test_regex_with_a_broken_expected_pattern_scores_zero_at_score_time() -> None:
    assert scorer(type="regex").score("anything", "(") == 0.0


def test_regex_pattern_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ScorerInvalid, match="pattern must be a string"):
        scorer_parse({"type": "regex", "pattern": 5})


def test_regex_pattern_that_does_not_compile_is_refused() -> None:
    with pytest.raises(ScorerInvalid, match="not a valid regular expression"):
        scorer_parse({"type": "regex", "pattern": "(unclosed"})


def test_regex_pattern_longer_than_500_characters_is_refused() -> None:
    with pytest.raises(ScorerInvalid, match="at most 500"):
        scorer_parse({"type": "regex", "pattern": "a" * 501})


def test_regex_pattern_of_500_characters_is_accepted() -> None:
    assert scorer(type="regex", pattern="a" * 500).pattern == "a" * 500


def test_regex_null_pattern_means_expected_is_the_pattern() -> None:
    assert scorer(type="regex", pattern=None).pattern is None


@pytest.mark.parametrize("expected", [None, 3, ["a"], {"a": 1}, "(", "anything"])
def test_regex_with_own_pattern_accepts_any_expected(expected: object) -> None:
    expected_check(scorer(type="regex", pattern="x"), expected)


@pytest.mark.parametrize("expected", [None, 3, True, ["a"]])
def test_regex_without_own_pattern_refuses_expected_that_is_not_a_string(expected: object) -> None:
    with pytest.raises(ScorerInvalid, match="must be a string"):
        expected_check(scorer(type="regex"), expected)


def test_regex_without_own_pattern_refuses_expected_that_does_not_compile() -> None:
    with pytest.raises(ScorerInvalid, match="expected pattern is not a valid regular expression"):
        expected_check(scorer(type="regex"), "[a-")


def test_regex_without_own_pattern_refuses_expected_longer_than_500_characters() -> None:
    with pytest.raises(ScorerInvalid, match="at most 500"):
        expected_check(scorer(type="regex"), "a" * 501)


def test_regex_without_own_pattern_accepts_a_compiling_expected() -> None:
    expected_check(scorer(type="regex"), r"^\d{3}$")


# --- json_schema ----------------------------------------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def person() -> Scorer:
    return scorer(type="json_schema", schema=PERSON)


def test_json_schema_valid_output_scores_one() -> None:
    assert person().score('{"name": "Ada", "age": 36}', None) == 1.0


def test_json_schema_invalid_output_scores_zero() -> None:
    assert person().score('{"name": "Ada", "age": -1}', None) == 0.0
    assert person().score('{"name": "Ada"}', None) == 0.0


def test_json_schema_ignores_surrounding_whitespace() -> None:
    assert person().score('\n  {"name": "Ada", "age": 36}  \n', None) == 1.0


@pytest.mark.parametrize(
    "output",
    [
        '```json\n{"name": "Ada", "age": 36}\n```',
        '  ```json\n{"name": "Ada", "age": 36}\n```\n',
        '```JSON\n{"name": "Ada", "age": 36}\n```',
        '```\n{"name": "Ada", "age": 36}\n```',
        '```json {"name": "Ada", "age": 36} ```',
    ],
)
def test_json_schema_strips_a_code_fence(output: str) -> None:
    assert person().score(output, None) == 1.0


@pytest.mark.parametrize(
    "output",
    [
        "",
        "not json",
        'Here you go: {"name": "Ada", "age": 36}',
        '{"name": "Ada", "age": 36',
        "```json\n```",
        '```python\n{"name": "Ada", "age": 36}\n```',
        "NaN",
        '{"name": "Ada", "age": NaN}',
    ],
)
def test_json_schema_non_json_output_scores_zero(output: str) -> None:
    assert person().score(output, None) == 0.0


def test_json_schema_deeply_nested_output_scores_zero() -> None:
    parsed = scorer(type="json_schema", schema={"type": "array"})
    assert parsed.score("[" * 15_000 + "]" * 5_000, None) == 0.0


def test_json_schema_output_cut_at_the_limit_is_not_json() -> None:
    body = '{"name": "' + "a" * OUTPUT_LIMIT + '", "age": 1}'
    assert person().score(body, None) == 0.0


def test_json_schema_ignores_expected() -> None:
    assert person().score('{"name": "Ada", "age": 36}', "something else") == 1.0
    for expected in (None, 3, "x", [1]):
        expected_check(person(), expected)


def test_json_schema_uses_the_dialect_named_by_dollar_schema() -> None:
    draft4 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "number",
        "maximum": 5,
        "exclusiveMaximum": True,
    }
    parsed = scorer(type="json_schema", schema=draft4)
    assert parsed.score("4", None) == 1.0
    assert parsed.score("5", None) == 0.0


def test_json_schema_with_an_unresolvable_ref_scores_zero_without_raising() -> None:
    parsed = scorer(type="json_schema", schema={"$ref": "#/$defs/missing"})
    assert parsed.score("{}", None) == 0.0


def test_json_schema_keeps_its_own_copy_of_the_schema() -> None:
    schema: dict[str, object] = {"type": "string"}
    parsed = scorer(type="json_schema", schema=schema)
    schema["type"] = "integer"
    assert parsed.score('"text"', None) == 1.0


def test_json_schema_without_schema_is_refused() -> None:
    with pytest.raises(ScorerInvalid, match="needs a schema"):
        scorer_parse({"type": "json_schema"})


@pytest.mark.parametrize("schema", [None, "object", [], True, 1])
def test_json_schema_schema_that_is_not_an_object_is_refused(schema: object) -> None:
    with pytest.raises(ScorerInvalid, match="schema must be a JSON object"):
        scorer_parse({"type": "json_schema", "schema": schema})


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "strnig"},
        {"type": "object", "required": "name"},
        {"minimum": "zero"},
        {"properties": {"a": {"type": 5}}},
    ],
)
def test_json_schema_schema_that_fails_check_schema_is_refused(schema: dict[str, object]) -> None:
    with pytest.raises(ScorerInvalid, match="not a valid JSON Schema"):
        scorer_parse({"type": "json_schema", "schema": schema})


@pytest.mark.parametrize("dialect", ["http://example.com/my-schema", 5, ["x"]])
def test_json_schema_unknown_dollar_schema_is_refused(dialect: object) -> None:
    with pytest.raises(ScorerInvalid, match=r"unknown \$schema"):
        scorer_parse({"type": "json_schema", "schema": {"$schema": dialect}})


def test_json_schema_scorers_with_equal_schemas_are_equal() -> None:
    assert person() == person()


# --- numeric --------------------------------------------------------------------------------------


def test_numeric_equal_number_scores_one() -> None:
    assert scorer(type="numeric").score("The answer is 42.", 42) == 1.0


def test_numeric_different_number_scores_zero() -> None:
    assert scorer(type="numeric").score("The answer is 41.", 42) == 0.0


def test_numeric_default_tolerance_is_zero() -> None:
    parsed = scorer(type="numeric")
    assert parsed.tolerance == 0.0
    assert parsed.relative is False
    assert parsed.score("42.0001", 42) == 0.0


def test_numeric_within_absolute_tolerance_scores_one() -> None:
    assert scorer(type="numeric", tolerance=0.5).score("42.4", 42) == 1.0


def test_numeric_outside_absolute_tolerance_scores_zero() -> None:
    assert scorer(type="numeric", tolerance=0.5).score("42.6", 42) == 0.0


def test_numeric_on_the_tolerance_boundary_scores_one() -> None:
    # 1.01 - 1.0 is a hair over 0.01 in binary floating point.
    assert scorer(type="numeric", tolerance=0.01).score("1.01", 1.0) == 1.0
    assert scorer(type="numeric", tolerance=0.01).score("0.99", 1.0) == 1.0


def test_numeric_within_relative_tolerance_scores_one() -> None:
    assert scorer(type="numeric", tolerance=0.01, relative=True).score("1009", 1000) == 1.0


def test_numeric_outside_relative_tolerance_scores_zero() -> None:
    assert scorer(type="numeric", tolerance=0.01, relative=True).score("1011", 1000) == 0.0


def test_numeric_relative_tolerance_scales_with_a_negative_expected() -> None:
    assert scorer(type="numeric", tolerance=0.1, relative=True).score("-95", -100) == 1.0


def test_numeric_relative_tolerance_with_expected_zero_needs_exactly_zero() -> None:
    parsed = scorer(type="numeric", tolerance=0.5, relative=True)
    assert parsed.score("0", 0) == 1.0
    assert parsed.score("0.001", 0) == 0.0


def test_numeric_relative_false_is_absolute() -> None:
    assert scorer(type="numeric", tolerance=0.01, relative=False).score("1009", 1000) == 0.0


def test_numeric_integer_tolerance_is_accepted() -> None:
    assert scorer(type="numeric", tolerance=2).tolerance == 2.0


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Total: 1,204.15 EUR", 1204.15),
        ("-17 degrees", -17),
        ("+3.5", 3.5),
        ("\u22123.5", -3.5),
        ("it is .5", 0.5),
        ("about 1.5e3 units", 1500),
        ("1,000,000", 1_000_000),
        ("$12", 12),
        ("答案是-5", -5),
        ("42.", 42),
        ("0042", 42),
    ],
)
def test_numeric_reads_the_number_forms_people_write(output: str, expected: float) -> None:
    assert scorer(type="numeric").score(output, expected) == 1.0


def test_numeric_uses_the_first_number_in_the_output() -> None:
    parsed = scorer(type="numeric")
    assert parsed.score("3 apples and 4 pears", 3) == 1.0
    assert parsed.score("3 apples and 4 pears", 4) == 0.0


def test_numeric_hyphen_inside_a_word_is_not_a_minus_sign() -> None:
    assert scorer(type="numeric").score("COVID-19", 19) == 1.0


def test_numeric_comma_not_followed_by_three_digits_is_not_a_thousands_separator() -> None:
    parsed = scorer(type="numeric")
    assert parsed.score("1,5", 1) == 1.0
    assert parsed.score("1,2345", 1) == 1.0


@pytest.mark.parametrize("output", ["", "no number here", "minus - and dot .", "eleven"])
def test_numeric_output_without_a_number_scores_zero(output: str) -> None:
    assert scorer(type="numeric", tolerance=1000).score(output, 0) == 0.0


def test_numeric_number_past_the_output_limit_is_not_seen() -> None:
    assert scorer(type="numeric").score("x" * OUTPUT_LIMIT + "42", 42) == 0.0


def test_numeric_overflowing_output_number_scores_zero() -> None:
    assert scorer(type="numeric", tolerance=1e300).score("1e999", 1) == 0.0


def test_numeric_expected_integer_too_large_for_a_float_is_refused() -> None:
    with pytest.raises(ScorerInvalid, match="finite"):
        expected_check(scorer(type="numeric"), 10**400)


@pytest.mark.parametrize("value", ["0.1", True, None, [1]])
def test_numeric_tolerance_that_is_not_a_number_is_refused(value: object) -> None:
    with pytest.raises(ScorerInvalid, match="tolerance must be a number"):
        scorer_parse({"type": "numeric", "tolerance": value})


@pytest.mark.parametrize("value", [-0.1, -1, float("inf"), float("nan"), 10**400])
def test_numeric_tolerance_negative_or_not_finite_is_refused(value: float) -> None:
    with pytest.raises(ScorerInvalid, match="tolerance must be a finite number, zero or more"):
        scorer_parse({"type": "numeric", "tolerance": value})


@pytest.mark.parametrize("value", ["false", 0, None])
def test_numeric_relative_that_is_not_a_boolean_is_refused(value: object) -> None:
    with pytest.raises(ScorerInvalid, match="relative must be true or false"):
        scorer_parse({"type": "numeric", "relative": value})


@pytest.mark.parametrize("expected", ["42", "1,204.15", True, False, None, [42]])
def test_numeric_refuses_expected_that_is_not_a_number(expected: object) -> None:
    with pytest.raises(ScorerInvalid, match="expected must be a number"):
        expected_check(scorer(type="numeric"), expected)


@pytest.mark.parametrize("expected", [float("inf"), float("-inf"), float("nan")])
def test_numeric_refuses_expected_that_is_not_finite(expected: float) -> None:
    with pytest.raises(ScorerInvalid, match="finite"):
        expected_check(scorer(type="numeric"), expected)


@pytest.mark.parametrize("expected", [0, -3, 2.5, 1e10])
def test_numeric_accepts_int_and_float_expected(expected: float) -> None:
    expected_check(scorer(type="numeric"), expected)


def test_expected_check_refuses_a_scorer_of_unknown_kind() -> None:
    with pytest.raises(ScorerInvalid, match="unknown"):
        expected_check(Scorer(kind="fuzzy"), "x")


def test_scorer_of_unknown_kind_scores_zero() -> None:
    assert Scorer(kind="fuzzy").score("x", "x") == 0.0
