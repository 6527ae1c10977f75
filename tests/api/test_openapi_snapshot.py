"""The committed OpenAPI snapshot matches the live schema, and the docs work offline."""

from __future__ import annotations

import difflib
import json
import re

import pytest
from django.test import Client

from appliance.api.openapi import SNAPSHOTS, openapi_json


@pytest.mark.parametrize("which", sorted(SNAPSHOTS))
def test_committed_openapi_snapshot_matches_the_live_schema(which: str) -> None:
    live = openapi_json(which)
    snapshot = SNAPSHOTS[which]
    committed = snapshot.read_text(encoding="utf-8") if snapshot.exists() else ""
    if live != committed:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                live.splitlines(keepends=True),
                f"docs/{snapshot.name} (committed)",
                "live schema",
                n=2,
            )
        )
        pytest.fail(
            f"The API changed but docs/{snapshot.name} did not: run `make openapi` "
            f"(python -m appliance.api.openapi) and commit the result.\n{diff[:4000]}"
        )


@pytest.mark.parametrize("which", sorted(SNAPSHOTS))
def test_snapshot_is_stable_text(which: str) -> None:
    assert openapi_json(which) == openapi_json(which)
    assert openapi_json(which).endswith("}\n")


@pytest.mark.django_db
def test_openapi_json_is_served_and_matches_the_snapshot_document() -> None:
    response = Client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == json.loads(openapi_json())


@pytest.mark.django_db
def test_docs_page_uses_only_local_static_assets() -> None:
    response = Client().get("/api/v1/docs")
    assert response.status_code == 200
    html = response.content.decode()
    sources = re.findall(r"""<(?:script|link)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", html)
    assert sources, "the docs page loads no assets at all?"
    for source in sources:
        assert source.startswith("/static/"), f"docs page loads {source} from outside the appliance"
    lowered = html.lower()
    for marker in ("cdn", "jsdelivr", "unpkg", "https://", "http://", "//fonts."):
        assert marker not in lowered, f"docs page mentions {marker!r}"
    assert "/api/v1/openapi.json" in html


@pytest.mark.django_db
def test_docs_static_assets_are_served_locally() -> None:
    html = Client().get("/api/v1/docs").content.decode()
    client = Client()
    for source in re.findall(r"""\b(?:src|href)=["'](/static/[^"']+)["']""", html):
        response = client.get(source)
        assert response.status_code == 200, source
        assert response.getvalue(), source
