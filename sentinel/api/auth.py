"""The write actions' bearer token.

Reads (alerts, devices, models, /healthz, /metrics) are open to whoever reaches the port,
which is loopback unless ``health.bind`` says otherwise. Writes -- ack, resolve, activate,
rollback -- need ``Authorization: Bearer <token>``, the token read once at start from the
``api_token`` credential (systemd ``LoadCredential=``) or ``SENTINEL_API_TOKEN``, as the
MQTT password is. Without a configured token every write is refused with 403 rather than
left open: a daemon nobody set a token for cannot be driven from a browser tab on the box.
The comparison takes the same time wherever the tokens differ (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sentinel.config import API_TOKEN_CREDENTIAL, API_TOKEN_ENV

__all__ = ["require_token"]

NO_TOKEN = (
    "write actions are disabled: no API token is configured (give the daemon the "
    f"{API_TOKEN_CREDENTIAL} credential with LoadCredential=, or {API_TOKEN_ENV}; see "
    "docs/OPERATIONS.md)"
)
BAD_TOKEN = "this action needs the API token: send the header Authorization: Bearer <token>"

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiToken",
    description=f"The daemon's {API_TOKEN_CREDENTIAL} credential; needed by write actions.",
)


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse the request unless it carries the configured token."""
    token: str | None = request.app.state.context.token
    if not token:
        raise HTTPException(status_code=403, detail=NO_TOKEN)
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            status_code=401, detail=BAD_TOKEN, headers={"WWW-Authenticate": "Bearer"}
        )
