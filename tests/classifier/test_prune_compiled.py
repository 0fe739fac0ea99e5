"""Compiled model graphs no worker will load again are removed; everything else stays."""

import os
import time
from types import SimpleNamespace

import pytest
import torch
from django.core.management import call_command

from classifier.models import ModelVersion
from ml.predict import compiled_graph_name, parse_compiled_graph_name
from ml.presets import PreprocessConfig

pytestmark = pytest.mark.django_db


def test_a_compiled_graph_name_reads_back():
    bundle = SimpleNamespace(kind="classifier", version="50928f2faad7", preprocess=PreprocessConfig())
    name = compiled_graph_name(bundle, torch.device("cpu"))
    graph = parse_compiled_graph_name(name)
    assert (graph.kind, graph.version, graph.input_size, graph.torch_version) == (
        "classifier", "50928f2faad7", (224, 224), torch.__version__
    )
    assert name.startswith("classifier-50928f2faad7-224px-")  # the name graphs of the crop geometry always had
    frame = SimpleNamespace(kind="classifier", version="ab", preprocess=PreprocessConfig(frame_size=(240, 320)))
    assert parse_compiled_graph_name(compiled_graph_name(frame, torch.device("cpu"))).input_size == (240, 320)
    assert graph.capability == torch.backends.cpu.get_cpu_capability()
    assert parse_compiled_graph_name("notes.txt") is None
    assert parse_compiled_graph_name("classifier-abc-224px.pt") is None


@pytest.fixture
def compiled_dir(tmp_path, settings):
    settings.CARSITE_COMPILED_MODELS_DIR = str(tmp_path)
    for kind, version in (("gate", "208d4f826d3a"), ("classifier", "50928f2faad7")):
        ModelVersion.objects.create(kind=kind, version=version, architecture="efficientnet_lite0",
                                    bundle_path=f"{kind}/{version}")
    return tmp_path


def _touch(directory, name, age_seconds=0.0):
    path = directory / name
    path.write_bytes(b"graph")
    if age_seconds:
        then = time.time() - age_seconds
        os.utime(path, (then, then))
    return path


def test_prune_removes_unregistered_other_torch_and_abandoned_files_only(compiled_dir, capsys):
    now = torch.__version__
    kept = [
        _touch(compiled_dir, f"gate-208d4f826d3a-224px-torch{now}-AVX2.pt"),
        _touch(compiled_dir, f"classifier-50928f2faad7-224px-torch{now}-AVX512.pt"),  # another CPU kind: kept
        _touch(compiled_dir, f".classifier-50928f2faad7-224px-torch{now}-AVX2.pt.abc.tmp"),  # being written
        _touch(compiled_dir, "README.txt", age_seconds=10 * 86400),  # not the cache's
    ]
    removed = [
        _touch(compiled_dir, f"classifier-0000deadbeef-224px-torch{now}-AVX2.pt"),  # version gone
        _touch(compiled_dir, "gate-208d4f826d3a-224px-torch1.0.0+cpu-AVX2.pt"),  # another torch release
        _touch(compiled_dir, f".gate-208d4f826d3a-224px-torch{now}-AVX2.pt.xyz.tmp", age_seconds=2 * 3600),
    ]

    call_command("prune_compiled_models", "--dry-run")
    assert all(path.exists() for path in kept + removed)
    assert capsys.readouterr().out.count("would remove") == 3

    call_command("prune_compiled_models")
    assert [path.exists() for path in kept] == [True] * 4
    assert [path.exists() for path in removed] == [False] * 3
    assert "Freed 3 files" in capsys.readouterr().out


def test_prune_without_a_cache_directory_does_nothing(settings, tmp_path, capsys):
    settings.CARSITE_COMPILED_MODELS_DIR = ""
    call_command("prune_compiled_models")
    settings.CARSITE_COMPILED_MODELS_DIR = str(tmp_path / "never-created")
    call_command("prune_compiled_models")
    assert capsys.readouterr().out.count("Freed 0 files") == 2
