"""A fast stand-in for a vLLM engine in its own process, for the gateway benchmark:
``python -m tests.bench.fake_openai_server --port N [--chunks 16] [--delay 0]``.

It serves tests/gateway/fake_engine.py's ``FakeEngine`` (vLLM's answer shapes, any bearer key
accepted) under uvicorn, in a process of its own so that it shares no interpreter lock with the
load generator or the gateway. It keeps only the last few requests it saw, not all of them.
"""

from __future__ import annotations

import argparse
from collections import deque

import uvicorn

from tests.gateway.fake_engine import FakeEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=16, help="content chunks per stream")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each chunk")
    options = parser.parse_args()
    engine = FakeEngine(
        chunks=options.chunks,
        delay=options.delay,
        requests=deque(maxlen=16),  # type: ignore[arg-type]  # only append() is used
    )
    uvicorn.run(
        engine,
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
    )


if __name__ == "__main__":
    main()
