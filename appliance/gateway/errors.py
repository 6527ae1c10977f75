"""The gateway's errors, in OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``)
because its clients are OpenAI client libraries; the management API keeps its own contract."""

from __future__ import annotations

from django.http import JsonResponse


class GatewayError(Exception):
    """A request the gateway answers with an error; ``headers`` carry e.g. ``Retry-After``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def invalid(message: str, *, param: str | None = None, code: str = "invalid_value") -> GatewayError:
    """A request body that breaks a rule (422)."""
    return GatewayError(422, message, param=param, code=code)


def unauthenticated(message: str, code: str = "invalid_api_key") -> GatewayError:
    return GatewayError(401, message, type="authentication_error", code=code)


def model_not_found(name: str) -> GatewayError:
    """A model that does not exist and one the key may not use answer alike."""
    return GatewayError(
        404,
        f"The model `{name}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def rate_limited(message: str, *, code: str, retry_after: int) -> GatewayError:
    kind = "insufficient_quota" if code == "budget_exceeded" else "rate_limit_error"
    return GatewayError(
        429, message, type=kind, code=code, headers={"Retry-After": str(max(1, retry_after))}
    )


def unavailable(message: str, *, code: str) -> GatewayError:
    return GatewayError(503, message, type="service_unavailable", code=code)
