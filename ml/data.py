"""Manifests, datasets, near-duplicate grouping and group-aware splitting."""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ml.imaging import dhash, to_rgb


@dataclass(frozen=True)
class ManifestRecord:
    path: Path
    label: str
    group: str | None = None


def read_manifest(csv_path: str | Path) -> list[ManifestRecord]:
    """Read a path,label[,group] CSV; relative paths are resolved against the CSV's folder."""
    csv_path = Path(csv_path)
    out: list[ManifestRecord] = []
    with csv_path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            p = Path(row["path"])
            if not p.is_absolute():
                p = csv_path.parent / p
            out.append(ManifestRecord(p, row["label"], row.get("group") or None))
    return out


def write_manifest(records: Sequence[ManifestRecord], csv_path: str | Path) -> None:
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group"])
        for r in records:
            w.writerow([str(r.path), r.label, r.group or ""])


def load_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as im:
        return to_rgb(im)


class ImageManifestDataset(Dataset):
    """(tensor, class index) pairs from records.

    cache=True keeps decoded RGB images in memory: for small photo sets this removes JPEG
    decoding from every epoch, which is what makes the loader keep up on 2 CPU cores.
    """

    def __init__(
        self,
        records: Sequence[ManifestRecord],
        class_to_idx: dict[str, int],
        transform: Callable[[Image.Image], torch.Tensor],
        cache: bool = False,
    ) -> None:
        self.records = list(records)
        self.class_to_idx = dict(class_to_idx)
        self.transform = transform
        self.targets = [self.class_to_idx[r.label] for r in self.records]
        self._cache: list[Image.Image] | None = [load_rgb(r.path) for r in self.records] if cache else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self._cache[i] if self._cache is not None else load_rgb(self.records[i].path)
        return self.transform(img), self.targets[i]


# ---------------------------------------------------------------- near-duplicates


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # keep the smaller index as root so group ids are deterministic
            self.parent[max(ra, rb)] = min(ra, rb)


def group_near_duplicates(
    records: Sequence[ManifestRecord],
    max_distance: int = 6,
    hashes: Sequence[int] | None = None,
) -> list[ManifestRecord]:
    """Set `group` so near-duplicate images (dHash distance <= max_distance) share one group.

    Records that already share a group stay together as well; the result's group id is
    "g<index of first member>" so it is stable for a given record order.
    """
    n = len(records)
    if hashes is None:
        hashes = []
        for r in records:
            with Image.open(r.path) as im:
                hashes.append(dhash(to_rgb(im)))
    uf = _UnionFind(n)
    by_existing: dict[str, int] = {}
    for i, r in enumerate(records):
        if r.group:
            if r.group in by_existing:
                uf.union(by_existing[r.group], i)
            else:
                by_existing[r.group] = i
    # O(n^2) is fine for the few thousand photos per model we deal with.
    arr = np.asarray(hashes, dtype=np.uint64)
    for i in range(n):
        x = np.bitwise_xor(arr[i + 1 :], arr[i])
        dist = np.array([int(v).bit_count() for v in x], dtype=np.int64)
        for j in np.nonzero(dist <= max_distance)[0]:
            uf.union(i, i + 1 + int(j))
    return [replace(r, group=f"g{uf.find(i)}") for i, r in enumerate(records)]


# ---------------------------------------------------------------- splitting


@dataclass
class Split:
    train: list[ManifestRecord] = field(default_factory=list)
    val: list[ManifestRecord] = field(default_factory=list)
    test: list[ManifestRecord] = field(default_factory=list)
    seed: int | None = None

    def to_json(self) -> str:
        def enc(rs: list[ManifestRecord]) -> list[dict[str, Any]]:
            return [{"path": str(r.path), "label": r.label, "group": r.group} for r in rs]

        return json.dumps(
            {"seed": self.seed, "train": enc(self.train), "val": enc(self.val), "test": enc(self.test)},
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Split:
        d = json.loads(text)

        def dec(rs: list[dict[str, Any]]) -> list[ManifestRecord]:
            return [ManifestRecord(Path(r["path"]), r["label"], r.get("group")) for r in rs]

        return cls(dec(d["train"]), dec(d["val"]), dec(d["test"]), d.get("seed"))


def split_grouped(
    records: Sequence[ManifestRecord],
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> Split:
    """Group-aware, per-label stratified, seeded split.

    A group (near-duplicate cluster, or each record alone if it has no group) is assigned to
    exactly one split. Groups are keyed by their majority label and, label by label, shuffled
    with the seed and dealt greedily to whichever split is furthest below its target share of
    that label's images. Deterministic for the same records and seed (input order irrelevant).
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError("need 0 <= val_fraction, test_fraction and val+test < 1")
    groups: dict[str, list[ManifestRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (str(r.path), r.label)):
        groups[r.group if r.group else f"__single__{r.path}"].append(r)
    by_label: dict[str, list[str]] = defaultdict(list)
    for gid, members in groups.items():
        labels = [m.label for m in members]
        major = max(sorted(set(labels)), key=labels.count)
        by_label[major].append(gid)
    rng = random.Random(seed)
    fractions = {"test": test_fraction, "val": val_fraction, "train": 1 - val_fraction - test_fraction}
    out: dict[str, list[ManifestRecord]] = {"train": [], "val": [], "test": []}
    for label in sorted(by_label):
        gids = sorted(by_label[label])
        rng.shuffle(gids)
        # big groups first so the small ones can even out the shares afterwards
        gids.sort(key=lambda g: -len(groups[g]))
        total = sum(len(groups[g]) for g in gids)
        got = {k: 0 for k in fractions}
        for gid in gids:
            size = len(groups[gid])
            # deficit = how many images this split still "owes" the label; ties favour train
            name = max(
                ("train", "val", "test"),
                key=lambda k: (fractions[k] * total - got[k], k == "train"),
            )
            if fractions[name] == 0:
                name = "train"
            got[name] += size
            out[name].extend(groups[gid])
    return Split(out["train"], out["val"], out["test"], seed)


def grouped_folds(records: Sequence[ManifestRecord], k: int = 5, seed: int = 0) -> list[int]:
    """The cross-validation fold (0..k-1) of each record: a group never straddles two folds.

    Label by label, groups are shuffled with the seed and dealt, biggest first, to the fold that
    holds fewest of that label's images so far (ties: fewest images overall, then lowest index),
    so every fold sees every well-represented label. Deterministic for the same records and seed.
    """
    if k < 2:
        raise ValueError("need at least 2 folds")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[r.group if r.group else f"__single__{r.path}"].append(i)
    by_label: dict[str, list[str]] = defaultdict(list)
    for gid, members in groups.items():
        labels = [records[i].label for i in members]
        by_label[max(sorted(set(labels)), key=labels.count)].append(gid)
    rng = random.Random(seed)
    fold_of = [0] * len(records)
    fold_sizes = [0] * k
    for label in sorted(by_label):
        gids = sorted(by_label[label])
        rng.shuffle(gids)
        gids.sort(key=lambda g: -len(groups[g]))
        label_counts = [0] * k
        for gid in gids:
            fold = min(range(k), key=lambda f: (label_counts[f], fold_sizes[f], f))
            for i in groups[gid]:
                fold_of[i] = fold
            label_counts[fold] += len(groups[gid])
            fold_sizes[fold] += len(groups[gid])
    return fold_of
