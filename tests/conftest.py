"""Suite-wide test set-up.

The suite runs against whatever DATABASE_URL names: ``scripts/test`` runs it on the real
PostgreSQL server and again (the fast parts) on the SQLite default.
"""

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CARSITE_SHARED_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _isolated_media(settings, tmp_path_factory):
    """Every test writes media into its own folder, never into var/media."""
    media = tmp_path_factory.mktemp("media")
    settings.MEDIA_ROOT = media
    yield media
    shutil.rmtree(media, ignore_errors=True)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
