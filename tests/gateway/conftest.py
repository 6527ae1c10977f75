"""Gateway fixtures: the real ASGI application under uvicorn in a thread (so streams, disconnects
and the OpenAI client behave as in production), fake engines on loopback, and applications with
keys and grants."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import openai
import pytest
import uvicorn
from asgiref.sync import async_to_sync, sync_to_async
from django.core import signals
from django.db import close_old_connections

from appliance.access import services as access
from appliance.access.models import Application
from appliance.accounts.models import User
from appliance.core import redis as shared_redis
from appliance.fleet import deployments
from appliance.fleet.choices import Device, EngineState
from appliance.fleet.models import Deployment, Node
from appliance.gateway import auth, handler, records, upstream
from appliance.registry.models import Adapter, BaseModel
from tests.access.conftest import approved_adapters, approved_model, oscar  # noqa: F401
from tests.conftest import actor
from tests.fleet.conftest import enroll  # noqa: F401
from tests.gateway.fake_engine import FakeEngine, free_port

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _fresh_gateway_state() -> None:
    """Each test starts with empty caches, counters and route table in this process (and, when
    REDIS_URL is set, in Redis)."""
    shared_redis.reset()
    if shared_redis.configured():
        client = shared_redis.sync_client()
        for key in client.scan_iter("appliance:*"):
            client.delete(key)
    auth.cache.clear()
    records._last_used_written.clear()
    handler.balancer.__init__()  # type: ignore[misc]
    handler.limiter.local.__init__()  # type: ignore[misc]


class Gateway:
    """The appliance's ASGI application (gateway included) under uvicorn, up for one ``run``.

    The server's event loop runs inside ``async_to_sync`` on this thread's behalf, so its
    database calls come back to this thread and see the test's transaction; ``fn`` (the client
    side, plain blocking code) runs in a worker thread meanwhile and must not touch the database.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        # As Django's test client does: the server's request signals run on this thread here, and
        # must not close the test's database connection (a real close on Postgres).
        signals.request_started.disconnect(close_old_connections)
        signals.request_finished.disconnect(close_old_connections)
        try:
            return async_to_sync(self._serve_while)(fn, *args)
        finally:
            signals.request_started.connect(close_old_connections)
            signals.request_finished.connect(close_old_connections)

    async def _serve_while(self, fn: Callable[..., T], *args: Any) -> T:
        from appliance.asgi import application

        server = uvicorn.Server(
            uvicorn.Config(
                application,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="off",
                access_log=False,
            )
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        try:
            return await sync_to_async(fn, thread_sensitive=False)(*args)
        finally:
            await asyncio.sleep(0.05)  # a stream's last bookkeeping starts as its client leaves
            while handler.bookkeeping:
                await asyncio.gather(*handler.bookkeeping, return_exceptions=True)
            server.should_exit = True
            await task
            await upstream.close_session()

    def client(self, key: str, **options: Any) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.url,
            api_key=key,
            max_retries=0,
            timeout=options.pop("timeout", 20),
            **options,
        )


@pytest.fixture
def gateway(settings: Any) -> Gateway:
    settings.APPLIANCE_GATEWAY_ROUTES_SECONDS = 0  # see engine changes at once
    return Gateway()


@pytest.fixture
def fake_engines() -> Iterator[Callable[..., FakeEngine]]:
    started: list[FakeEngine] = []

    def start(**behaviour: Any) -> FakeEngine:
        engine = FakeEngine(**behaviour).start()
        started.append(engine)
        return engine

    yield start
    for engine in started:
        engine.stop()


@pytest.fixture
def serve(operator: User, enroll: Any) -> Callable[..., Deployment]:  # noqa: F811
    """``serve(model, engines, adapters=[...])`` → a CPU deployment whose replicas are the given
    fake engines, reported ready with those adapters loaded (what an agent would report)."""

    def build(
        model: BaseModel,
        engines: list[FakeEngine],
        adapters: list[Adapter] | None = None,
        name: str | None = None,
    ) -> Deployment:
        node, _ = enroll(f"node-{len(Node.objects.all())}")
        deployment = deployments.deployment_create(
            actor=actor(operator),
            name=name or model.name,
            model=model,
            adapters=adapters or [],
            device=Device.CPU,
            node=node,
            replicas=len(engines),
        )
        for instance, engine in zip(deployment.instances.order_by("replica"), engines, strict=True):
            instance.state = EngineState.READY
            instance.port = engine.port
            instance.loaded_adapters = [a.name for a in adapters or []]
            instance.save()
        return deployment

    return build


@pytest.fixture
def application(admin: User, app_owner: User) -> Callable[..., tuple[Application, str]]:
    """``application(name, grants=[model or adapter, ...], **limits)`` → (application, API key)."""

    def build(
        name: str = "discharge-letters", grants: list[Any] | None = None, **limits: Any
    ) -> tuple[Application, str]:
        app = access.application_create(actor=actor(admin), name=name, owner=app_owner, **limits)
        for entry in grants or []:
            if isinstance(entry, Adapter):
                access.grant_create(
                    actor=actor(admin), application=app, model=entry.base_model, adapter=entry
                )
            else:
                access.grant_create(actor=actor(admin), application=app, model=entry)
        _, key = access.api_key_create(actor=actor(app_owner), application=app, name="prod")
        return app, key

    return build
