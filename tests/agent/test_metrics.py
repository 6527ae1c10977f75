"""Parsing vLLM's Prometheus metrics: sums across label sets, None for what is missing."""

from __future__ import annotations

import json

import pytest

from appliance.agent.metrics import EngineMetrics, Sample, parse_engine_metrics, parse_samples

# Shaped like vLLM 0.x's /metrics (prometheus_client exposition), two engines of one model.
# The second engine's model name holds a comma and escaped quotes on purpose.
VLLM_METRICS = r"""
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12345.0
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.234567168e+09
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny-chat"} 3.0
vllm:num_requests_running{engine="1",model_name="tiny, \"v2\""} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny-chat"} 2.0
vllm:num_requests_waiting{engine="1",model_name="tiny, \"v2\""} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny-chat"} 0.125
vllm:kv_cache_usage_perc{engine="1",model_name="tiny, \"v2\""} 0.5
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="tiny-chat"} 1200.0
vllm:prompt_tokens_total{engine="1",model_name="tiny, \"v2\""} 34.0
# HELP vllm:prompt_tokens_created Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="tiny-chat"} 1.7629e+09
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="tiny-chat"} 560.0
vllm:generation_tokens_total{engine="1",model_name="tiny, \"v2\""} 40.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="tiny-chat"} 10.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny-chat"} 4.0
vllm:request_success_total{engine="0",finished_reason="abort",model_name="tiny-chat"} 0.0
vllm:request_success_total{engine="1",finished_reason="stop",model_name="tiny, \"v2\""} 1.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="tiny-chat"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="tiny-chat"} 12.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="tiny-chat"} 14.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny-chat"} 14.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny-chat"} 1.5
vllm:time_to_first_token_seconds_bucket{engine="1",le="+Inf",model_name="tiny, \"v2\""} 1.0
vllm:time_to_first_token_seconds_count{engine="1",model_name="tiny, \"v2\""} 1.0
vllm:time_to_first_token_seconds_sum{engine="1",model_name="tiny, \"v2\""} 0.25
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="1.0",model_name="tiny-chat"} 13.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="tiny-chat"} 14.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="tiny-chat"} 14.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="tiny-chat"} 9.75
# HELP vllm:inter_token_latency_seconds Histogram of inter-token latency in seconds.
# TYPE vllm:inter_token_latency_seconds histogram
vllm:inter_token_latency_seconds_count{engine="0",model_name="tiny-chat"} 546.0
vllm:inter_token_latency_seconds_sum{engine="0",model_name="tiny-chat"} 5.46
"""


def test_a_vllm_sample_is_summed_across_label_sets() -> None:
    metrics = parse_engine_metrics(VLLM_METRICS)

    assert metrics == EngineMetrics(
        requests_running=4,
        requests_waiting=2,
        kv_cache_usage=0.5,
        prompt_tokens_total=1234,
        generation_tokens_total=600,
        request_success_total=15,
        ttft_seconds_sum=1.75,
        ttft_seconds_count=15,
        e2e_latency_seconds_sum=9.75,
        e2e_latency_seconds_count=14,
    )


def test_kv_cache_usage_is_the_fullest_engine_not_a_sum() -> None:
    text = 'vllm:kv_cache_usage_perc{engine="0"} 0.75\nvllm:kv_cache_usage_perc{engine="1"} 0.5\n'

    assert parse_engine_metrics(text).kv_cache_usage == 0.75


def test_missing_metrics_are_none_not_zero() -> None:
    text = "# HELP vllm:num_requests_running x\nvllm:num_requests_running 0\n"

    metrics = parse_engine_metrics(text)

    assert metrics.requests_running == 0
    assert metrics.to_dict() == {
        "requests_running": 0,
        **{name: None for name in EngineMetrics.__dataclass_fields__ if name != "requests_running"},
    }


def test_an_empty_page_has_no_readings() -> None:
    assert parse_engine_metrics("") == EngineMetrics()


def test_request_success_is_none_when_this_vllm_does_not_export_it() -> None:
    without = "\n".join(line for line in VLLM_METRICS.splitlines() if "request_success" not in line)

    assert parse_engine_metrics(without).request_success_total is None


def test_label_values_with_commas_and_escaped_quotes_are_parsed() -> None:
    text = r'm{a="x, y",b="say \"hi\"",c="back\\slash",d="line\nbreak",} 1.5 1700000000000'

    assert parse_samples(text) == [
        Sample("m", {"a": "x, y", "b": 'say "hi"', "c": "back\\slash", "d": "line\nbreak"}, 1.5)
    ]


def test_nan_and_inf_values_parse_but_are_not_readings() -> None:
    text = (
        "vllm:num_requests_waiting NaN\n"
        'vllm:kv_cache_usage_perc{engine="0"} +Inf\n'
        'vllm:kv_cache_usage_perc{engine="1"} 0.25\n'
    )

    samples = parse_samples(text)
    metrics = parse_engine_metrics(text)

    assert [s.value for s in samples][1] == float("inf")
    assert metrics.requests_waiting is None
    assert metrics.kv_cache_usage == 0.25
    json.dumps(metrics.to_dict(), allow_nan=False)  # what the agent reports stays valid JSON


@pytest.mark.parametrize(
    "line",
    [
        "vllm:num_requests_running",
        'vllm:num_requests_running{engine="0" 3',
        'vllm:num_requests_running{engine="0} 3',
        'vllm:num_requests_running{engine="0" model="x"} 3',
        "vllm:num_requests_running three",
        "vllm:num_requests_running{engine=0} 3",
        "vllm:num_requests_running3",
        "9metric 3",
    ],
)
def test_malformed_lines_are_skipped(line: str) -> None:
    text = f"{line}\nvllm:num_requests_waiting 5\n"

    metrics = parse_engine_metrics(text)

    assert metrics.requests_running is None
    assert metrics.requests_waiting == 5
