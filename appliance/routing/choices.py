"""The kinds of things a route is made of: rule kinds, route states, cost model kinds, job states."""

from __future__ import annotations

from django.db import models


class RouteStatus(models.TextChoices):
    ACTIVE = "active"
    DISABLED = "disabled"  # callers get 404 as for an unknown model; the definition is kept


class RuleKind(models.TextChoices):
    """How a rule looks at a request; the first rule that matches decides its task class."""

    KEYWORD = "keyword"  # any of the comma-separated words or phrases, case-insensitive
    REGEX = "regex"  # a Python regular expression, searched in the prompt
    MIN_CHARS = "min_chars"  # the prompt is at least this many characters long
    MAX_CHARS = "max_chars"  # the prompt is at most this many characters long
    HAS_CODE = "has_code"  # the prompt carries source code (fences, keywords, braces)
    HAS_NUMBERS = "has_numbers"  # the prompt carries arithmetic (numbers with operators, units)
    JSON_SCHEMA = "json_schema"  # the request asks for JSON output (response_format)


VALUE_KINDS = frozenset({RuleKind.KEYWORD, RuleKind.REGEX, RuleKind.MIN_CHARS, RuleKind.MAX_CHARS})


class CostKind(models.TextChoices):
    GPU_HOUR = "gpu_hour"  # the GPUs' hourly price, amortised over the tokens they served
    PER_MILLION = "per_million"  # a set price per million tokens


class EvaluationStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# Where a request's task class came from (the first word of a decision's reason).
class DecisionSource(models.TextChoices):
    HINT = "hint"
    RULE = "rule"
    SEMANTIC = "semantic"
    DEFAULT = "default"
