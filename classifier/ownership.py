"""Which visitor uploaded a photo: a random token kept in their session, never the session key itself.

Each upload stores the token. Knowing it grants nothing, since it is only compared with the token in the
visitor's own session, which the server signs or keeps; a session key is a login. The token survives
signing in (Django keeps the session's data when it renews the key) and is lost on signing out.
"""

import secrets
from typing import Any

OWNER_TOKEN_SESSION_KEY = "classifier_owner"


def visitor_owner_token(request: Any, *, create: bool = False) -> str:
    """The visitor's owner token; ``create`` gives a visitor without one a new token (saved with the session)."""
    session = getattr(request, "session", None)
    if session is None:
        return ""
    token = session.get(OWNER_TOKEN_SESSION_KEY, "")
    if not token and create:
        token = session[OWNER_TOKEN_SESSION_KEY] = secrets.token_hex(16)
    return token


def is_visitor_owner(request: Any, owner_token: str) -> bool:
    token = visitor_owner_token(request)
    return bool(token) and bool(owner_token) and secrets.compare_digest(token, owner_token)
