"""The console's URL map, under /console/. Each area's views module brings its own patterns."""

from __future__ import annotations

from django.urls import path

from appliance.console.views import (
    account,
    applications,
    audit,
    auth,
    break_glass,
    dashboard,
    fleet,
    registry,
    routes,
    sso,
    tokens,
    usage,
    users,
)

app_name = "console"

urlpatterns = [
    path("", dashboard.dashboard_page, name="dashboard"),
    path("figures", dashboard.dashboard_figures, name="dashboard-figures"),
    path("sign-in", auth.sign_in_view, name="sign-in"),
    path("sign-in/code", auth.code_view, name="sign-in-code"),
    path("sign-in/authenticator", auth.enrol_view, name="mfa-enrol"),
    path("sign-out", auth.sign_out_view, name="sign-out"),
    path("account", account.account, name="account"),
    path("account/time-zone", account.time_zone, name="account-time-zone"),
    path("account/recovery-codes", account.recovery_codes, name="account-recovery-codes"),
    path("account/sessions/<int:session_id>/end", account.session_end, name="account-session-end"),
    *registry.urlpatterns,
    *fleet.urlpatterns,
    *applications.urlpatterns,
    *routes.urlpatterns,
    *usage.urlpatterns,
    *audit.urlpatterns,
    *users.urlpatterns,
    *break_glass.urlpatterns,
    *tokens.urlpatterns,
    *sso.urlpatterns,
]
