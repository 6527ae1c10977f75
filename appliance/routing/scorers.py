"""Scorers: how one evaluation item's model answer is judged right (1.0) or wrong (0.0).

An admin uploads an evaluation set whose items say how their answers are scored. The specs arrive
as untrusted JSON, so ``scorer_parse`` and ``expected_check`` refuse anything malformed up front,
with a message a person can act on; after that, ``Scorer.score`` must judge any model output,
however odd, without raising, because one strange answer must not abort a whole evaluation run.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from jsonschema import exceptions as jsonschema_exceptions
from jsonschema import validators as jsonschema_validators

SCORER_KINDS = ("exact", "contains", "regex", "json_schema", "numeric")

# Only this much of an answer is examined: it bounds the work (regex backtracking above all) that a
# runaway model answer can cause. Answers that matter are far shorter.
OUTPUT_LIMIT = 20_000

PATTERN_MAX_CHARS = 500

_OPTIONS: dict[str, tuple[str, ...]] = {
    "exact": ("case_sensitive",),
    "contains": ("case_sensitive",),
    "regex": ("pattern",),
    "json_schema": ("schema",),
    "numeric": ("tolerance", "relative"),
}

_FENCE = re.compile(r"\A```[ \t]*(?:json)?[ \t]*\n?(.*?)\n?[ \t]*```\Z", re.DOTALL | re.IGNORECASE)

# A sign counts only where it cannot be a hyphen inside a word ("COVID-19" is 19, not -19). Digits
# are ASCII only: float() would take other scripts' digits, but a mix of scripts is not a number.
# A comma counts as a thousands separator only before exactly three digits ("1,2345" is 1).
_NUMBER = re.compile(
    r"(?:(?<![0-9A-Za-z_.])[-+\u2212])?"
    r"(?:(?:[0-9]{1,3}(?:,[0-9]{3}(?![0-9]))+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)"
    r"(?:[eE][-+]?[0-9]+)?"
)


class ScorerInvalid(ValueError):
    """A scorer spec, or an item's expected value, that cannot be used; the message says why."""


@dataclass(frozen=True)
class Scorer:
    """A parsed, checked scorer spec. Build it with ``scorer_parse``, not by hand."""

    kind: str
    case_sensitive: bool = False
    pattern: str | None = None
    # A dict cannot be hashed; equality still compares it.
    schema: dict[str, Any] | None = field(default=None, hash=False)
    tolerance: float = 0.0
    relative: bool = False

    def score(self, output: str, expected: object) -> float:
        """Return 1.0 if ``output`` is a right answer for ``expected``, else 0.0; never raises."""
        if not isinstance(output, str):
            return 0.0
        text = output[:OUTPUT_LIMIT]
        if self.kind in ("exact", "contains"):
            return _text_score(self.kind, self.case_sensitive, text, expected)
        if self.kind == "regex":
            return _regex_score(self.pattern, text, expected)
        if self.kind == "json_schema":
            return _json_schema_score(self.schema, text)
        if self.kind == "numeric":
            return _numeric_score(self.tolerance, self.relative, text, expected)
        return 0.0


def scorer_parse(spec: object) -> Scorer:
    """Turn a scorer spec (a JSON object such as ``{"type": "exact"}``) into a ``Scorer``.

    Raises ``ScorerInvalid`` naming the problem: an unknown type, an unknown option, an option of the
    wrong type, a regex that does not compile, a schema that is not a valid JSON Schema.
    """
    if not isinstance(spec, dict):
        raise ScorerInvalid(f"scorer must be a JSON object, not {_json_type(spec)}")
    if "type" not in spec:
        raise ScorerInvalid(f"scorer type is missing; it must be one of {_kinds_text()}")
    kind = spec["type"]
    if not isinstance(kind, str) or kind not in SCORER_KINDS:
        raise ScorerInvalid(
            f"scorer type {json.dumps(kind)} is unknown; it must be one of {_kinds_text()}"
        )
    allowed = _OPTIONS[kind]
    unknown = sorted(str(key) for key in spec if key != "type" and key not in allowed)
    if unknown:
        names = ", ".join(json.dumps(key) for key in unknown)
        raise ScorerInvalid(
            f"unknown option {names} for the {kind} scorer; allowed: {', '.join(allowed)}"
        )

    if kind in ("exact", "contains"):
        case_sensitive = spec.get("case_sensitive", False)
        if not isinstance(case_sensitive, bool):
            raise ScorerInvalid("scorer option case_sensitive must be true or false")
        return Scorer(kind=kind, case_sensitive=case_sensitive)

    if kind == "regex":
        pattern = spec.get("pattern")
        if pattern is None:
            return Scorer(kind=kind)
        if not isinstance(pattern, str):
            raise ScorerInvalid("scorer option pattern must be a string")
        _pattern_compile(pattern, "scorer pattern")
        return Scorer(kind=kind, pattern=pattern)

    if kind == "json_schema":
        if "schema" not in spec:
            raise ScorerInvalid("the json_schema scorer needs a schema")
        return Scorer(kind=kind, schema=_schema_check(spec["schema"]))

    tolerance = spec.get("tolerance", 0.0)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
        raise ScorerInvalid("scorer option tolerance must be a number")
    tolerance = _float(tolerance)
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ScorerInvalid("scorer option tolerance must be a finite number, zero or more")
    relative = spec.get("relative", False)
    if not isinstance(relative, bool):
        raise ScorerInvalid("scorer option relative must be true or false")
    return Scorer(kind=kind, tolerance=tolerance, relative=relative)


def expected_check(scorer: Scorer, expected: object) -> None:
    """Raise ``ScorerInvalid`` if ``expected`` cannot be scored by ``scorer``.

    ``None`` stands for an absent expected value; only json_schema scorers and regex scorers with
    their own pattern accept it.
    """
    kind = scorer.kind
    if kind in ("exact", "contains"):
        if not isinstance(expected, str):
            raise ScorerInvalid(
                f"expected must be a string for the {kind} scorer, {_got(expected)}"
            )
        if kind == "contains" and not expected.strip():
            # Every answer contains the empty string: such an item would always pass.
            raise ScorerInvalid("expected must not be empty for the contains scorer")
        return
    if kind == "regex":
        if scorer.pattern is not None:
            return
        if not isinstance(expected, str):
            raise ScorerInvalid(
                "expected must be a string (the pattern) for the regex scorer without its own "
                f"pattern, {_got(expected)}"
            )
        _pattern_compile(expected, "expected pattern")
        return
    if kind == "numeric":
        if isinstance(expected, bool) or not isinstance(expected, int | float):
            raise ScorerInvalid(
                f"expected must be a number for the numeric scorer, {_got(expected)}"
            )
        if not math.isfinite(_float(expected)):
            raise ScorerInvalid("expected must be a finite number for the numeric scorer")
        return
    if kind == "json_schema":
        return
    raise ScorerInvalid(f"scorer type {json.dumps(kind)} is unknown")


def _text_score(kind: str, case_sensitive: bool, text: str, expected: object) -> float:
    if not isinstance(expected, str):
        return 0.0
    if not case_sensitive:
        text, expected = text.casefold(), expected.casefold()
    if kind == "exact":
        return 1.0 if text.strip() == expected.strip() else 0.0
    return 1.0 if expected in text else 0.0


def _regex_score(pattern: str | None, text: str, expected: object) -> float:
    source = pattern if pattern is not None else expected
    if not isinstance(source, str):
        return 0.0
    try:
        return 1.0 if re.search(source, text) else 0.0
    except (re.error, RecursionError, OverflowError, MemoryError):
        return 0.0


def _json_schema_score(schema: dict[str, Any] | None, text: str) -> float:
    if schema is None:
        return 0.0
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        instance = json.loads(body, parse_constant=_constant_refuse)
    except (ValueError, RecursionError):
        return 0.0
    try:
        validator = jsonschema_validators.validator_for(schema)(schema)
        return 1.0 if validator.is_valid(instance) else 0.0
    except Exception:
        # A schema that passed check_schema can still fail at validation time, e.g. a $ref that
        # does not resolve, or an instance nested deeper than the recursion limit. That is a wrong
        # answer for this item, not a reason to stop the run.
        return 0.0


def _numeric_score(tolerance: float, relative: bool, text: str, expected: object) -> float:
    if isinstance(expected, bool) or not isinstance(expected, int | float):
        return 0.0
    target = _float(expected)
    found = _NUMBER.search(text)
    if found is None or not math.isfinite(target):
        return 0.0
    try:
        value = float(found.group().replace(",", "").replace("\u2212", "-"))
    except ValueError:
        return 0.0
    allowed = tolerance * abs(target) if relative else tolerance
    difference = abs(value - target)
    # Decimal fractions are inexact in binary: 1.01 - 1.0 is a hair above 0.01. A result on the
    # boundary counts as within it, as a person reading the numbers would expect.
    within = difference <= allowed or math.isclose(difference, allowed, rel_tol=1e-9)
    return 1.0 if within else 0.0


def _pattern_compile(pattern: str, what: str) -> None:
    if len(pattern) > PATTERN_MAX_CHARS:
        raise ScorerInvalid(
            f"{what} is {len(pattern)} characters long; at most {PATTERN_MAX_CHARS} are allowed"
        )
    try:
        re.compile(pattern)
    except re.error as error:
        raise ScorerInvalid(f"{what} is not a valid regular expression: {error}") from None
    except (RecursionError, OverflowError, MemoryError):
        raise ScorerInvalid(f"{what} is too complex to compile") from None


def _schema_check(schema: object) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise ScorerInvalid(f"scorer schema must be a JSON object, not {_json_type(schema)}")
    if "$schema" in schema:
        dialect = schema["$schema"]
        # An unknown $schema would fall back to the latest draft with only a warning; refusing it
        # tells the admin their schema would not be read the way they wrote it.
        if (
            not isinstance(dialect, str)
            or jsonschema_validators.validator_for(schema, default=None) is None
        ):
            raise ScorerInvalid(f"scorer schema has an unknown $schema: {json.dumps(dialect)}")
    validator_class = jsonschema_validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema_exceptions.SchemaError as error:
        where = "/".join(str(part) for part in error.path)
        at = f" at {where}" if where else ""
        raise ScorerInvalid(
            f"scorer schema is not a valid JSON Schema{at}: {error.message}"
        ) from None
    except RecursionError:
        raise ScorerInvalid("scorer schema is nested too deeply") from None
    # A private copy: the caller's dict may change later, and a Scorer is meant to be immutable.
    return copy.deepcopy(schema)


def _float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        # Only an int too large for a float gets here; its sign still matters.
        return -math.inf if value < 0 else math.inf


def _constant_refuse(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _kinds_text() -> str:
    return ", ".join(SCORER_KINDS)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _got(value: object) -> str:
    return "but it is missing or null" if value is None else f"not {_json_type(value)}"
