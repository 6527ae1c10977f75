"""The engine load and latency readings the agent reports, from vLLM's Prometheus ``/metrics``.

A small parser of the Prometheus text format (no prometheus_client on nodes): comment lines are
skipped, label values may hold commas and escaped quotes, values may be ``NaN`` or ``±Inf``.
Readings are summed across label sets (engines, finish reasons), except KV-cache usage, a 0..1
fraction per engine, where the fullest engine is what matters.

A metric that is absent, or only non-finite, is ``None``, never ``0``: a missing reading must
not look like an idle engine. This module must not import Django.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import NamedTuple

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*\"")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


class Sample(NamedTuple):
    """One line of the exposition: metric name, labels, value."""

    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class EngineMetrics:
    """What one engine is doing: queue depth, KV-cache fill, token and latency counters."""

    requests_running: int | None = None
    requests_waiting: int | None = None
    kv_cache_usage: float | None = None  # 0..1, despite vLLM's "_perc" name
    prompt_tokens_total: int | None = None
    generation_tokens_total: int | None = None
    request_success_total: int | None = None
    ttft_seconds_sum: float | None = None
    ttft_seconds_count: int | None = None
    e2e_latency_seconds_sum: float | None = None
    e2e_latency_seconds_count: int | None = None

    def to_dict(self) -> dict[str, int | float | None]:
        return asdict(self)


def parse_samples(text: str) -> list[Sample]:
    """Every sample line of a Prometheus text exposition; malformed lines are skipped."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and (sample := _parse_line(line)):
            samples.append(sample)
    return samples


def parse_engine_metrics(text: str) -> EngineMetrics:
    """The readings the agent reports, from the text of vLLM's ``/metrics``."""
    values: dict[str, list[float]] = {}
    for sample in parse_samples(text):
        if math.isfinite(sample.value):  # NaN/Inf is no reading, and is not valid JSON
            values.setdefault(sample.name, []).append(sample.value)

    def total(name: str) -> float | None:
        return _combine(values.get(name), sum)

    def count(name: str) -> int | None:
        value = total(name)
        return None if value is None else round(value)

    return EngineMetrics(
        requests_running=count("vllm:num_requests_running"),
        requests_waiting=count("vllm:num_requests_waiting"),
        kv_cache_usage=_combine(values.get("vllm:kv_cache_usage_perc"), max),
        prompt_tokens_total=count("vllm:prompt_tokens_total"),
        generation_tokens_total=count("vllm:generation_tokens_total"),
        request_success_total=count("vllm:request_success_total"),
        ttft_seconds_sum=total("vllm:time_to_first_token_seconds_sum"),
        ttft_seconds_count=count("vllm:time_to_first_token_seconds_count"),
        e2e_latency_seconds_sum=total("vllm:e2e_request_latency_seconds_sum"),
        e2e_latency_seconds_count=count("vllm:e2e_request_latency_seconds_count"),
    )


def _combine(values: list[float] | None, how: Callable[[Iterable[float]], float]) -> float | None:
    return float(how(values)) if values else None


def _parse_line(line: str) -> Sample | None:
    """``name{label="value",...} value [timestamp]``, or None if the line is not that."""
    match = _NAME.match(line)
    if not match:
        return None
    name, rest = match.group(), line[match.end() :]
    labels: dict[str, str] = {}
    if rest.startswith("{"):
        parsed = _parse_labels(rest, 1)
        if parsed is None:
            return None
        labels, end = parsed
        rest = rest[end:]
    fields = rest.split()
    if not rest[:1].isspace() or not 1 <= len(fields) <= 2:
        return None
    try:
        value = float(fields[0])
    except ValueError:
        return None
    return Sample(name, labels, value)


def _parse_labels(text: str, pos: int) -> tuple[dict[str, str], int] | None:
    """Labels from just after ``{``; returns them and the index after ``}``."""
    labels: dict[str, str] = {}
    while True:
        while pos < len(text) and text[pos] in " \t,":
            pos += 1
        if text.startswith("}", pos):
            return labels, pos + 1
        match = _LABEL_NAME.match(text, pos)
        if not match:
            return None
        pos = match.end()
        value: list[str] = []
        while pos < len(text) and text[pos] != '"':
            if text[pos] == "\\" and pos + 1 < len(text):
                pos += 1
                value.append(_ESCAPES.get(text[pos], "\\" + text[pos]))
            else:
                value.append(text[pos])
            pos += 1
        if pos >= len(text):
            return None  # unterminated value
        labels[match.group(1)] = "".join(value)
        pos += 1
        # After a value: a comma or the closing brace.
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos >= len(text) or text[pos] not in ",}":
            return None
