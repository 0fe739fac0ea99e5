from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ml.crossval import CrossValidation, cross_validate
from ml.data import ManifestRecord
from ml.evaluate import fit_temperature

LABELS = ["a", "b"]


def _records() -> list[ManifestRecord]:
    return [ManifestRecord(Path(f"{lab}{i}.jpg"), lab, f"{lab}{i // 2}") for lab in LABELS for i in range(10)]


def test_every_record_is_scored_once_by_a_model_that_never_saw_it() -> None:
    records = _records()
    seen_by_fit: list[set[Path]] = []
    scored: list[Path] = []

    def fit(train: list[ManifestRecord]):
        seen_by_fit.append({r.path for r in train})

        def score(held_out: list[ManifestRecord]) -> torch.Tensor:
            assert all(r.label == "" for r in held_out)  # the scored fold's labels are never shown
            assert not {r.path for r in held_out} & seen_by_fit[-1]
            scored.extend(r.path for r in held_out)
            return torch.tensor([[1.0, 0.0] if r.path.name.startswith("a") else [0.0, 1.0] for r in held_out])

        return score

    cv = cross_validate(records, LABELS, fit, k=5, seed=0)
    assert sorted(scored) == sorted(r.path for r in records)
    assert len(seen_by_fit) == 5
    assert cv.summary()["top1_mean"] == pytest.approx(1.0)
    assert cv.summary()["folds"] == 5 and cv.summary()["n"] == 20
    assert cv.targets.tolist() == [0] * 10 + [1] * 10
    # groups (pairs of photos) never straddle folds
    for i in range(0, 20, 2):
        assert cv.folds[i] == cv.folds[i + 1]


def test_out_of_fold_logits_land_on_their_own_rows() -> None:
    records = _records()

    def fit(train: list[ManifestRecord]):
        return lambda held_out: torch.tensor([[0.0, 1.0]] * len(held_out))  # always says "b"

    cv = cross_validate(records, LABELS, fit, k=4, seed=1)
    assert cv.logits.argmax(1).tolist() == [1] * 20
    assert cv.summary()["top1_mean"] == pytest.approx(0.5, abs=0.1)


def test_crossfitted_temperature_never_reads_the_fold_it_scores() -> None:
    generator = torch.Generator().manual_seed(0)
    folds = [i % 4 for i in range(40)]
    logits = 3 * torch.randn(40, 3, generator=generator)
    # mostly the logits' answer, so that the fitted temperatures are finite and differ by fold
    targets = torch.where(
        torch.rand(40, generator=generator) < 0.7, logits.argmax(1), torch.randint(0, 3, (40,), generator=generator)
    )
    cv = CrossValidation(folds, logits, targets, ["a", "b", "c"], 0.0)
    scored = torch.tensor([i for i, f in enumerate(folds) if f == 0])
    rest = torch.tensor([i for i, f in enumerate(folds) if f != 0])

    # fold 0's labels (and so any temperature fitted with them) leave fold 0's probabilities unchanged
    relabelled = targets.clone()
    relabelled[scored] = (relabelled[scored] + 1) % 3
    changed = CrossValidation(folds, logits, relabelled, ["a", "b", "c"], 0.0)
    assert torch.equal(cv.crossfitted_probs()[scored], changed.crossfitted_probs()[scored])
    # and they are fold 0's logits at the temperature of the other folds
    expected = (logits[scored] / fit_temperature(logits[rest], targets[rest])).softmax(1)
    assert torch.allclose(cv.crossfitted_probs()[scored], expected)
    assert not torch.allclose(cv.crossfitted_probs()[scored], logits[scored].softmax(1))
