"""The OpenAPI schemas of the management API and the agent API as stable text, and the committed
snapshots of them.

``python -m appliance.api.openapi`` (``make openapi``) rewrites docs/openapi.json and
docs/openapi-agent.json; a test fails when a live schema and its snapshot differ, so every API
change shows up in review.
"""

from __future__ import annotations

import json
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent.parent / "docs"
SNAPSHOT = DOCS / "openapi.json"
SNAPSHOTS = {"v1": SNAPSHOT, "agent": DOCS / "openapi-agent.json"}


def openapi_json(which: str = "v1") -> str:
    """The schema of /api/v1 (or the agent API) as indented JSON, sorted keys, final newline."""
    from ninja.responses import NinjaJSONEncoder

    from appliance.api.agent_v1 import api as agent_api
    from appliance.api.v1 import api

    # The encoder /api/v1/openapi.json uses: it turns lazy strings (model help texts) into text.
    schema = (agent_api if which == "agent" else api).get_openapi_schema()
    return json.dumps(schema, indent=2, sort_keys=True, cls=NinjaJSONEncoder) + "\n"


def main() -> None:
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "appliance.settings")
    django.setup()
    for which, path in SNAPSHOTS.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(openapi_json(which), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
