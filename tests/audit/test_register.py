"""The Art. 30 register: generated from the live configuration, every category accounted for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import call_command

from appliance.access import services as access
from appliance.access.choices import DataPolicy
from appliance.accounts.models import User
from appliance.audit.choices import DataCategory
from appliance.audit.models import AuditEvent
from appliance.audit.register import register_build
from appliance.audit.retention import retention_set
from appliance.core.errors import PermissionDenied
from tests.conftest import actor

pytestmark = pytest.mark.django_db


def test_every_data_category_has_purpose_subjects_recipients_and_retention(admin: User) -> None:
    register = register_build(actor=actor(admin))
    rows = {a["category"]: a for a in register["activities"]}
    assert set(rows) == set(DataCategory.values)
    for row in rows.values():
        for field in ("purpose", "data_subjects", "personal_data", "recipients", "erasure"):
            assert row[field].strip(), (row["category"], field)
        assert row["retention_days"] >= row["retention_floor"] > 0
    assert AuditEvent.objects.filter(action="compliance.register").count() == 1


def test_register_follows_the_live_retention_and_data_policies(
    admin: User, app_owner: User, tmp_path: Path
) -> None:
    retention_set(actor=actor(admin), category=DataCategory.CONTENT, days=14)
    access.application_create(
        actor=actor(admin),
        name="discharge-letters",
        owner=app_owner,
        data_policy=DataPolicy.KEEP_ENCRYPTED,
    )
    out = tmp_path / "register.json"
    call_command("compliance", "register", "--format", "json", "--out", str(out))
    register = json.loads(out.read_text())
    content = next(a for a in register["activities"] if a["category"] == "content")
    assert content["retention_days"] == 14
    assert [a["name"] for a in register["applications_keeping_content"]] == ["discharge-letters"]
    call_command("compliance", "register", "--out", str(tmp_path / "register.md"))
    markdown = (tmp_path / "register.md").read_text()
    assert "# Record of processing activities (GDPR Art. 30)" in markdown
    assert "* discharge-letters" in markdown


def test_app_owners_may_not_generate_the_register(app_owner: User) -> None:
    with pytest.raises(PermissionDenied):
        register_build(actor=actor(app_owner))
