import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "carsite.settings")
django_application = get_asgi_application()


async def application(scope: dict, receive, send) -> None:
    """Django's ASGI handler reads the whole request body before any middleware sees the request: stop
    reading it at CARSITE_REQUEST_MAX_BYTES and answer 413 (see carsite.middleware)."""
    if scope["type"] != "http":
        return await django_application(scope, receive, send)
    from django.conf import settings

    from carsite.middleware import declared_length, too_large_response

    limit = settings.CARSITE_REQUEST_MAX_BYTES
    length = declared_length(dict(scope.get("headers") or []).get(b"content-length"))
    if length > limit:
        return await _send(send, too_large_response(scope["path"], length))
    received = 0

    async def receive_within_limit() -> dict:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                await _send(send, too_large_response(scope["path"], None))
                return {"type": "http.disconnect"}  # Django stops reading and answers nothing itself
        return message

    await django_application(scope, receive_within_limit, send)


async def _send(send, response) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})
