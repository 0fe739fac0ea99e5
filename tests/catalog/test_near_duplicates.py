"""One near-duplicate hash: what the catalog stores for an image is what the training split computes from it."""

from __future__ import annotations

from PIL import Image

from catalog import imaging
from ml.data import ManifestRecord, group_near_duplicates
from ml.imaging import dhash, hamming, to_rgb


def test_the_stored_hash_is_the_training_hash_on_the_shared_photos(shared_data):
    paths = sorted((shared_data / "car-photos" / "images").glob("*.jpg"))
    assert len(paths) == 238
    stored, computed = [], []
    for path in paths:
        stored.append(int(imaging.normalise(path.read_bytes(), imaging.ImageLimits()).phash, 16))
        with Image.open(path) as image:
            computed.append(dhash(to_rgb(image)))
    assert stored == computed

    records = [ManifestRecord(path, "car") for path in paths]
    from_stored = [r.group for r in group_near_duplicates(records, hashes=stored)]
    from_files = [r.group for r in group_near_duplicates(records)]
    assert from_stored == from_files
    assert len(set(from_files)) < len(paths), "the galleries re-use photos: some groups have several members"


def test_hamming_takes_stored_hex_or_ints():
    assert hamming("00ff", 0x0F0F) == hamming(0x00FF, 0x0F0F) == 8
