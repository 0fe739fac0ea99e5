"""Where uploaded and scraped photos live: the local disk, or an S3-compatible bucket shared by every host."""

from __future__ import annotations

from typing import Any

import environ


def default_storage(env: environ.Env) -> dict[str, Any]:
    """``STORAGES["default"]``: an S3-compatible bucket when ``S3_BUCKET`` is set, else the local disk."""
    bucket = env.str("S3_BUCKET", default="")
    if not bucket:
        return {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    endpoint = env.str("S3_ENDPOINT_URL", default="")
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint or None,
            "access_key": env.str("S3_ACCESS_KEY_ID", default="") or None,
            "secret_key": env.str("S3_SECRET_ACCESS_KEY", default="") or None,
            "region_name": env.str("S3_REGION", default="") or None,
            # MinIO and most self-hosted servers want path-style addressing (endpoint/bucket/key).
            "addressing_style": "path" if env.bool("S3_PATH_STYLE", default=bool(endpoint)) else None,
            "querystring_auth": env.bool("S3_SIGNED_URLS", default=True),
            "file_overwrite": False,
            "default_acl": None,
        },
    }


def media_origin(env: environ.Env) -> str:
    """The origin pages load photos from when they are not on this site ("" when they are)."""
    if not env.str("S3_BUCKET", default=""):
        return ""
    return (
        env.str("S3_PUBLIC_ORIGIN", default="") or env.str("S3_ENDPOINT_URL", default="") or "https://*.amazonaws.com"
    )
