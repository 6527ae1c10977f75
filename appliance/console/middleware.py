"""Security headers for the console's pages: a strict Content-Security-Policy (no inline scripts
or styles, nothing from another origin), no caching of pages that show data, no framing."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponseBase

from appliance.core.middleware import DualMiddleware

CONSOLE_PREFIX = "/console/"
POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",  # the authenticator QR code is a data: image
        "connect-src 'self'",  # htmx's requests
        "font-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class ConsoleHeadersMiddleware(DualMiddleware):
    """Only on /console/ (the API and gateway answer JSON and set their own); no I/O, so it is
    async-capable without a thread."""

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return _secure(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        return _secure(request, await self.get_response(request))


def _secure(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    if request.path.startswith(CONSOLE_PREFIX):
        for name, value in HEADERS.items():
            response[name] = value
    return response
