from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.data import (
    ImageManifestDataset,
    ManifestRecord,
    Split,
    group_near_duplicates,
    grouped_folds,
    read_manifest,
    split_grouped,
    write_manifest,
)
from ml.imaging import dhash, hamming
from ml.presets import ClassificationPresetEval


def test_manifest_round_trip(tmp_path: Path) -> None:
    recs = [ManifestRecord(tmp_path / "a.png", "x", "g1"), ManifestRecord(tmp_path / "b.png", "y")]
    write_manifest(recs, tmp_path / "m.csv")
    assert read_manifest(tmp_path / "m.csv") == recs


def test_dataset_returns_tensor_and_index(shapes: list[ManifestRecord]) -> None:
    c2i = {"blue_triangle": 0, "green_square": 1, "red_circle": 2}
    ds = ImageManifestDataset(shapes[:3], c2i, ClassificationPresetEval(32, 36), cache=True)
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == c2i[shapes[0].label]


def test_perceptual_hash_near_duplicates_close_and_different_images_far(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).resize((320, 240))
    b = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).resize((320, 240))
    a_small = a.resize((160, 120))  # same photo at another size, JPEG recompressed
    a_small.save(tmp_path / "a.jpg", quality=70)
    with Image.open(tmp_path / "a.jpg") as a_jpg:
        assert hamming(dhash(a), dhash(a_jpg)) <= 6
    assert hamming(dhash(a), dhash(b)) > 15
    assert 0 <= dhash(a) < 2**64


def test_group_near_duplicates_unions_similar_and_existing_groups() -> None:
    recs = [ManifestRecord(Path(f"{i}.jpg"), "x", "keep" if i in (3, 4) else None) for i in range(5)]
    hashes = [0, 0b111, 0xFFFF0000FFFF0000, 0x00000000FFFFFFFF, 2**64 - 1]  # only 0~1 close (3 bits)
    out = group_near_duplicates(recs, max_distance=6, hashes=hashes)
    g = [r.group for r in out]
    assert g[0] == g[1]
    assert g[3] == g[4]  # shared existing group kept together despite distant hashes
    assert len({g[0], g[2], g[3]}) == 3


def _grouped_records() -> list[ManifestRecord]:
    recs = []
    for label, n_groups in (("a", 12), ("b", 10), ("c", 8)):
        for g in range(n_groups):
            for k in range(1 + g % 3):  # groups of size 1..3
                recs.append(ManifestRecord(Path(f"{label}/{g}/{k}.jpg"), label, f"{label}{g}"))
    return recs


def test_split_is_group_aware_stratified_and_seeded() -> None:
    recs = _grouped_records()
    s = split_grouped(recs, 0.2, 0.2, seed=3)
    parts = {"train": s.train, "val": s.val, "test": s.test}
    assert sum(len(p) for p in parts.values()) == len(recs)
    groups = {name: {r.group for r in p} for name, p in parts.items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])
    for label in "abc":
        counts = Counter(r.label for r in s.test)
        assert counts[label] >= 1, "every label should reach the test split"
    # seeded and order independent
    s2 = split_grouped(list(reversed(recs)), 0.2, 0.2, seed=3)
    assert [r.path for r in s.test] == [r.path for r in s2.test]
    s3 = split_grouped(recs, 0.2, 0.2, seed=4)
    assert {r.group for r in s3.test} != groups["test"]


def test_split_json_round_trip() -> None:
    s = split_grouped(_grouped_records(), 0.2, 0.2, seed=0)
    back = Split.from_json(s.to_json())
    assert back == s


def test_split_rejects_bad_fractions() -> None:
    with pytest.raises(ValueError):
        split_grouped(_grouped_records(), 0.6, 0.5, seed=0)


def test_grouped_folds_keep_groups_together_and_cover_every_record_once() -> None:
    recs = [ManifestRecord(Path(f"{lab}{i}.jpg"), lab, f"{lab}-g{i // 3}") for lab in "abc" for i in range(12)]
    recs += [ManifestRecord(Path(f"solo{i}.jpg"), "d") for i in range(6)]
    folds = grouped_folds(recs, k=4, seed=0)
    assert len(folds) == len(recs) and set(folds) == {0, 1, 2, 3}
    fold_of_group: dict[str, set[int]] = {}
    for r, f in zip(recs, folds, strict=True):
        if r.group:
            fold_of_group.setdefault(r.group, set()).add(f)
    assert all(len(fs) == 1 for fs in fold_of_group.values())
    # every label with at least k groups appears in every fold
    for lab in "abcd":
        assert {f for r, f in zip(recs, folds, strict=True) if r.label == lab} == {0, 1, 2, 3}
    assert grouped_folds(list(reversed(recs)), k=4, seed=0) == list(reversed(folds))
