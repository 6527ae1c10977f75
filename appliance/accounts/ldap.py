"""Signing in with the organisation's directory (LDAP, Active Directory): a Django
authentication backend behind the same sign-in as local passwords, so throttling, the audit
events and the second-factor rule are the same. The directory checks the password (a bind as the
person); their groups there decide their role, at every sign-in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.backends import BaseBackend
from django.http import HttpRequest
from ldap3 import SUBTREE, Connection, Server
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from appliance.accounts import sso
from appliance.accounts.models import User

ATTRIBUTES = ["mail", "displayName", "memberOf"]


@dataclass(frozen=True)
class Person:
    dn: str
    username: str
    email: str
    name: str
    groups: list[str]


def enabled() -> bool:
    return bool(settings.APPLIANCE_LDAP_URL)


def _connect(user: str, password: str) -> Connection:
    """A connection to the directory (tests put a fake directory behind it)."""
    server = Server(settings.APPLIANCE_LDAP_URL, connect_timeout=5)
    connection = Connection(server, user=user, password=password, receive_timeout=10)
    if settings.APPLIANCE_LDAP_START_TLS:
        connection.open()
        connection.start_tls()
    return connection


def _first(entry: Any, name: str) -> str:
    values = entry["attributes"].get(name) or []
    if isinstance(values, str):
        return values
    return str(values[0]) if values else ""


def find(username: str, password: str) -> Person | None:
    """The person whose user name and password the directory accepts, or None. An empty password
    is refused before the directory sees it (an empty bind is anonymous, and succeeds)."""
    if not username or not password:
        return None
    try:
        service = _connect(settings.APPLIANCE_LDAP_BIND_DN, settings.APPLIANCE_LDAP_BIND_PASSWORD)
        if not service.bind():
            return None
        query = settings.APPLIANCE_LDAP_USER_FILTER.format(username=escape_filter_chars(username))
        service.search(
            settings.APPLIANCE_LDAP_USER_BASE, query, search_scope=SUBTREE, attributes=ATTRIBUTES
        )
        entries = [e for e in service.response or [] if e.get("type") == "searchResEntry"]
        service.unbind()
        if len(entries) != 1:
            return None  # unknown, or ambiguous: never guess
        entry = entries[0]
        person = _connect(entry["dn"], password)
        accepted = person.bind()
        person.unbind()
    except LDAPException:
        return None
    if not accepted:
        return None
    groups = entry["attributes"].get("memberOf") or []
    return Person(
        dn=entry["dn"],
        username=username,
        email=_first(entry, "mail"),
        name=_first(entry, "displayName"),
        groups=[str(g) for g in ([groups] if isinstance(groups, str) else groups)],
    )


def role_groups() -> dict[str, set[str]]:
    """``APPLIANCE_LDAP_ROLE_GROUPS``: ``role=group DN`` pairs separated by ``;`` (DNs hold
    commas), compared case-insensitively as directories do."""
    return sso.parse_role_groups(settings.APPLIANCE_LDAP_ROLE_GROUPS.split(";"), casefold=True)


class LdapBackend(BaseBackend):
    """After Django's ModelBackend: local accounts first; a directory account has no usable
    password here, so only this backend signs it in."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        if not enabled():
            return None
        person = find(username or "", password or "")
        if person is None:
            return None
        held = [g.lower() for g in person.groups]
        return sso.provision(
            subject=f"ldap:{settings.APPLIANCE_LDAP_URL}|{person.dn.lower()}",
            username=person.username,
            role=sso.role_from(role_groups(), held),
            profile={"email": person.email[:254], "full_name": person.name[:150]},
            source="ldap",
        )

    def get_user(self, user_id: int) -> User | None:
        return User.objects.filter(pk=user_id, is_active=True).first()
