"""The management API's OpenAPI schema as stable text, and the committed snapshot of it.

``python -m appliance.api.openapi`` (``make openapi``) rewrites docs/openapi.json; a test fails when
the live schema and the snapshot differ, so every API change shows up in review.
"""

from __future__ import annotations

import json
from pathlib import Path

SNAPSHOT = Path(__file__).resolve().parent.parent.parent / "docs" / "openapi.json"


def openapi_json() -> str:
    """The schema of /api/v1 as indented JSON with sorted keys and a final newline."""
    from ninja.responses import NinjaJSONEncoder

    from appliance.api.v1 import api

    # The encoder /api/v1/openapi.json uses: it turns lazy strings (model help texts) into text.
    schema = api.get_openapi_schema()
    return json.dumps(schema, indent=2, sort_keys=True, cls=NinjaJSONEncoder) + "\n"


def main() -> None:
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "appliance.settings")
    django.setup()
    SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
    SNAPSHOT.write_text(openapi_json(), encoding="utf-8")
    print(f"wrote {SNAPSHOT}")


if __name__ == "__main__":
    main()
