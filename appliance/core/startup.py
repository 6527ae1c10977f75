"""Refusal to start in production with unsafe settings.

Django's system checks do not run under an ASGI server, so the settings module calls
``production_problems`` itself and refuses to load; each problem carries a stable id.
"""

from __future__ import annotations

INSECURE_SECRET_PREFIX = "insecure-embedded-"  # noqa: S105 - a marker, not a key


def production_problems(
    *,
    debug: bool,
    secret_key: str,
    database_engine: str,
    allowed_hosts: list[str],
    witness_address: str,
    witness_tls: bool,
    oidc_issuer: str = "",
    ldap_url: str = "",
    ldap_start_tls: bool = False,
) -> list[str]:
    """The reasons these settings are unsafe for production, empty when they are fine."""
    problems = []
    if debug:
        problems.append("appliance.E001: APPLIANCE_DEBUG is on; turn it off in production.")
    if not secret_key or secret_key.startswith(INSECURE_SECRET_PREFIX) or len(secret_key) < 50:
        problems.append(
            "appliance.E002: APPLIANCE_SECRET_KEY (or APPLIANCE_SECRET_KEY_FILE) is unset, the "
            "embedded default, or shorter than 50 characters."
        )
    if database_engine.endswith("sqlite3"):
        problems.append(
            "appliance.E003: the database is SQLite; set DATABASE_URL to a Postgres database."
        )
    if not allowed_hosts or "*" in allowed_hosts:
        problems.append(
            "appliance.E004: APPLIANCE_ALLOWED_HOSTS is empty or '*'; list the appliance's host names."
        )
    if witness_address and not witness_tls:
        problems.append(
            "appliance.E005: the audit witness (APPLIANCE_AUDIT_WITNESS_ADDRESS) would send the "
            "audit log in plain text; set APPLIANCE_AUDIT_WITNESS_TLS=true."
        )
    if oidc_issuer and not oidc_issuer.startswith("https://"):
        problems.append(
            "appliance.E006: APPLIANCE_OIDC_ISSUER is not an https:// address; identity tokens "
            "and the client secret would cross the network in plain text."
        )
    if ldap_url.startswith("ldap://") and not ldap_start_tls:
        problems.append(
            "appliance.E007: APPLIANCE_LDAP_URL is plain ldap:// without StartTLS; passwords "
            "would cross the network in plain text (use ldaps:// or APPLIANCE_LDAP_START_TLS)."
        )
    return problems
