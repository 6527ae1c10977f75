from __future__ import annotations

from typing import Any


def test_chat_through_the_gateway(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    engine = fake_engines()
    serve(approved_model, [engine])
    _, key = application(grants=[approved_model])
    client = gateway.client(key)

    def scenario() -> Any:
        answer = client.chat.completions.create(
            model="base-model", messages=[{"role": "user", "content": "hi"}]
        )
        chunks = list(
            client.chat.completions.create(
                model="base-model", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
        return answer, chunks, [m.id for m in client.models.list()]

    answer, chunks, models = gateway.run(scenario)
    assert answer.choices[0].message.content
    assert len(chunks) == 3
    assert models == ["base-model"]
