"""A serving install has no torch: the site, the worker and the models' ONNX Runtime path must not need it.

Each check runs in a fresh interpreter whose imports of torch (and torchvision) fail, as they would in a
`pip install '.[serve]'` virtualenv; scripts/test also runs the pipeline tests in such a venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

BLOCK_TORCH = """
import importlib.abc, sys

class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: a serving install)")
        return None

sys.meta_path.insert(0, _NoTorch())
"""

SERVING_PACKAGES = ("carsite", "catalog", "classifier", "scraping")
SERVING_ML_MODULES = ("ml", "ml.preprocess", "ml.bundle", "ml.predict")


def _run_without_torch(code: str, timeout: int = 120, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DJANGO_SETTINGS_MODULE": "carsite.settings", **env_vars}
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def exported_bundle(tmp_path_factory) -> Path:
    import torch

    from ml.bundle import save_bundle
    from ml.export import ensure_onnx_export
    from ml.models import create_model
    from ml.presets import PreprocessConfig

    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 3, weights=None).eval()
    out = tmp_path_factory.mktemp("serve") / "bundle"
    save_bundle(
        out,
        model,
        kind="classifier",
        arch="efficientnet_lite0",
        labels=["A a", "B b", "C c"],
        preprocess=PreprocessConfig(64, 72),
        command=["test"],
    )
    assert ensure_onnx_export(out) is not None
    return out


def test_the_blocker_blocks_torch() -> None:
    result = _run_without_torch("import torch")
    assert result.returncode != 0 and "blocked: a serving install" in result.stderr


def test_every_serving_module_imports_without_torch() -> None:
    result = _run_without_torch(f"""
        import importlib, pkgutil, django
        django.setup()
        imported = []
        for package in {SERVING_PACKAGES!r}:
            module = importlib.import_module(package)
            for info in pkgutil.walk_packages(module.__path__, package + "."):
                if ".migrations." not in info.name:
                    importlib.import_module(info.name)
                    imported.append(info.name)
        for name in {SERVING_ML_MODULES!r}:
            importlib.import_module(name)
        assert "torch" not in sys.modules
        print(len(imported))
    """)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) > 50  # the apps' modules, commands and tasks really were imported


def test_a_bundle_with_its_export_classifies_on_onnx_runtime_without_torch(exported_bundle: Path, tmp_path) -> None:
    from PIL import Image

    from ml.predict import Predictor

    photo = tmp_path / "photo.png"
    Image.new("RGB", (90, 70), (200, 40, 40)).save(photo)
    expected = Predictor.from_bundle(exported_bundle, backend="torch").predict([photo], top_k=3)[0]

    result = _run_without_torch(f"""
        import json
        from ml.predict import Predictor
        predictor = Predictor.from_bundle({str(exported_bundle)!r}, num_threads=1)
        predictor.warmup()
        ranked = predictor.predict([{str(photo)!r}], top_k=3)[0]
        assert "torch" not in sys.modules
        print(json.dumps([predictor.backend, [[p.label, p.probability] for p in ranked]]))
    """)
    assert result.returncode == 0, result.stderr
    backend, ranked = json.loads(result.stdout.splitlines()[-1])
    assert backend == "onnxruntime"
    assert [label for label, _ in ranked] == [p.label for p in expected]
    assert [p for _, p in ranked] == pytest.approx([p.probability for p in expected], abs=1e-5)


def test_a_bundle_without_export_cannot_be_served_and_says_which_extra_is_missing(exported_bundle, tmp_path) -> None:
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(exported_bundle, bare, ignore=shutil.ignore_patterns("model.onnx", "onnx.json"))
    result = _run_without_torch(f"""
        from ml.predict import Predictor
        Predictor.from_bundle({str(bare)!r})
    """)
    assert result.returncode != 0
    assert "needs PyTorch" in result.stderr and "carsite[train]" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        "call_command('train_classifier')",
        "call_command('train_gate')",
        "call_command('train_gate', '--zero-shot')",
        "call_command('migrate', verbosity=0); call_command('setup_demo')",  # no gate yet: it would build one
        "from classifier.tasks import train_classifier; train_classifier.run({})",
        "call_command('migrate', verbosity=0); call_command('export_models')",
    ],
)
def test_training_commands_and_tasks_fail_with_the_extra_to_install(command: str, tmp_path) -> None:
    result = _run_without_torch(
        f"""
        import django
        django.setup()
        from django.core.management import CommandError, call_command
        from classifier.services.training import TrainingError
        try:
            {command}
        except (CommandError, TrainingError) as exc:
            print(f"{{type(exc).__name__}}: {{exc}}")
        """,
        DATABASE_URL=f"sqlite:///{tmp_path / 'serve.sqlite3'}",
    )
    assert result.returncode == 0, result.stderr
    assert "Error: Training needs PyTorch" in result.stdout or "Error: Exporting a model to ONNX needs PyTorch" in (
        result.stdout
    )
    assert "carsite[train]" in result.stdout


def test_ml_train_fails_with_the_extra_to_install() -> None:
    result = _run_without_torch("""
        import runpy
        sys.argv = ["ml.train", "--help"]
        runpy.run_module("ml.train", run_name="__main__")
    """)
    assert result.returncode != 0
    assert "Training (ml.train) needs PyTorch" in result.stderr and "carsite[train]" in result.stderr
