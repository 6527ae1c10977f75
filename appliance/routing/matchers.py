"""What each kind of rule looks for, compiled once per route version. Rules see the prompt text
(the last user message, or the completion prompt) and the request's other fields; they run on the
gateway's event loop, so each is a single precompiled regex search or a length check."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from appliance.routing.choices import RuleKind

Matcher = Callable[[str, dict[str, Any]], bool]

MAX_PATTERN = 500
SCAN_CHARS = 20_000  # rules look at the start of very long prompts only

# Source code: a fence, or a line that starts like code in the languages internal apps send.
# Case-sensitive, so that prose ("Import the list", "Return JSON") is not taken for code.
CODE = re.compile(
    r"```|^\s*(?:def |class |import |from \S+ import |function |const |let |var |public |"
    r"private |#include|package |SELECT\b.*\bFROM\b|INSERT INTO|UPDATE \w+ SET|CREATE TABLE|"
    r"for \(|while \(|if \(|\$ |\w+\s*=\s*\w+\(|</?[a-z]+[ >])"
    r"|[;{}]\s*$|=>|::|\w+\(\)",
    re.MULTILINE,
)
# Arithmetic between numbers, or a number with a unit of quantity.
ARITHMETIC = re.compile(
    r"\d\s*(?:[-+*/\u00d7\u00f7^%]|\bper\b|\btimes\b|\bdivided by\b|\bplus\b|\bminus\b)\s*\d"
    r"|\d\s*(?:%|percent\b|mg/kg|ml/h)",
    re.IGNORECASE,
)
JSON_FORMATS = frozenset({"json_object", "json_schema"})


def keywords(value: str) -> list[str]:
    return [word.strip() for word in value.split(",") if word.strip()]


def keyword_pattern(value: str) -> re.Pattern[str]:
    """Words or phrases, matched case-insensitively at the start of a word, so that `summar`
    matches summary and summarise."""
    words = "|".join(re.escape(word) for word in keywords(value))
    return re.compile(rf"(?<!\w)(?:{words})", re.IGNORECASE)


def has_code(text: str) -> bool:
    return CODE.search(text) is not None


def has_numbers(text: str) -> bool:
    """Arithmetic, not merely figures: a note full of dates and amounts is not a sum."""
    return ARITHMETIC.search(text) is not None


def wants_json(body: dict[str, Any]) -> bool:
    """The request asks for structured output: an OpenAI response_format, or vLLM's guided JSON."""
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in JSON_FORMATS:
        return True
    return bool(body.get("guided_json") or body.get("structured_outputs"))


def rule_problem(kind: str, value: str) -> str | None:
    """Why a rule cannot be used, or None."""
    if kind not in RuleKind.values:
        return f"kind must be one of {', '.join(RuleKind.values)}"
    if kind == RuleKind.KEYWORD and not keywords(value):
        return "a keyword rule needs at least one word (comma-separated)"
    if kind == RuleKind.REGEX:
        if not value or len(value) > MAX_PATTERN:
            return f"a regex rule needs a pattern of 1 to {MAX_PATTERN} characters"
        try:
            re.compile(value)
        except re.error as exc:
            return f"the pattern does not compile: {exc}"
    if kind in (RuleKind.MIN_CHARS, RuleKind.MAX_CHARS) and (
        not value.isascii() or not value.isdigit() or int(value) > 10**7
    ):
        return "a length rule needs a whole number of characters"
    if kind in (RuleKind.HAS_CODE, RuleKind.HAS_NUMBERS, RuleKind.JSON_SCHEMA) and value:
        return f"a {kind} rule takes no value"
    return None


def matcher_for(kind: str, value: str) -> Matcher:
    """The test a rule runs (its value checked by ``rule_problem`` when it was saved)."""
    if kind == RuleKind.KEYWORD:
        pattern = keyword_pattern(value)
        return lambda text, body: pattern.search(text, 0, SCAN_CHARS) is not None
    if kind == RuleKind.REGEX:
        compiled = re.compile(value)
        return lambda text, body: compiled.search(text, 0, SCAN_CHARS) is not None
    if kind == RuleKind.MIN_CHARS:
        least = int(value)
        return lambda text, body: len(text) >= least
    if kind == RuleKind.MAX_CHARS:
        most = int(value)
        return lambda text, body: len(text) <= most
    if kind == RuleKind.HAS_CODE:
        return lambda text, body: has_code(text[:SCAN_CHARS])
    if kind == RuleKind.HAS_NUMBERS:
        return lambda text, body: has_numbers(text[:SCAN_CHARS])
    if kind == RuleKind.JSON_SCHEMA:
        return lambda text, body: wants_json(body)
    raise ValueError(kind)
