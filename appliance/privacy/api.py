"""Privacy API (/api/v1/privacy): read a request's stored content (admins, audited) and erase a
data subject's content (admins, or the application's owner)."""

from typing import Any

from django.http import HttpRequest
from ninja import Router

from appliance.access.selectors import application_list
from appliance.api.base import actor_of, error_responses, get_or_404
from appliance.privacy import services
from appliance.privacy.schemas import StoredContentOut, SubjectEraseIn, SubjectErasureOut

router = Router(tags=["privacy"])


@router.get(
    "/content/{request_id}",
    response={200: StoredContentOut, **error_responses(401, 403, 404, 410, 500, 503)},
)
def read_content(request: HttpRequest, request_id: str) -> services.ContentRead:
    """The decrypted prompt and completion kept for a gateway request (its `X-Request-ID`), where
    the application's data policy is `keep_encrypted`. Admins only; every read is audited.
    410 `erased` once the data subject was erased."""
    return services.content_read(actor=actor_of(request), request_id=request_id)


@router.post(
    "/subjects/erase",
    response={200: SubjectErasureOut, **error_responses(401, 403, 404, 409, 422)},
)
def erase_subject(request: HttpRequest, payload: SubjectEraseIn) -> Any:
    """Destroy a data subject's key (GDPR Art. 17): everything stored for it in the application
    becomes unreadable. 409 `already_erased` if nothing was stored since the last erasure."""
    actor = actor_of(request)
    application = get_or_404(
        application_list(actor=actor), "application", pk=payload.application_id
    )
    return services.subject_erase(actor=actor, application=application, subject=payload.subject)
