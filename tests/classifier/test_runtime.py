"""The per-process model cache: loaded once, swapped when another version is activated."""

import pytest

from catalog import services as catalog_services
from classifier import runtime
from classifier.models import ModelKind
from classifier.services.registry import model_version_activate, model_version_register

pytestmark = pytest.mark.django_db


def test_no_active_model_means_none():
    assert runtime.get_active_model(ModelKind.CLASSIFIER) is None
    assert runtime.get_active_model(ModelKind.GATE) is None


def test_active_model_is_loaded_once_and_reused(make_bundle, django_assert_max_num_queries):
    mdx, _ = catalog_services.car_model_get_or_create(make="Acura", model="MDX", year=2023)
    version = model_version_activate(model_version_register(make_bundle(["Acura MDX", "Other Car"])))
    loaded = runtime.get_active_model(ModelKind.CLASSIFIER)
    assert loaded is not None
    assert loaded.version.pk == version.pk
    assert loaded.predictor.version == version.version
    assert loaded.predictor.labels == ["Acura MDX", "Other Car"]
    assert loaded.car_model_ids == {"Acura MDX": mdx.pk, "Other Car": None}
    with django_assert_max_num_queries(1):
        again = runtime.get_active_model(ModelKind.CLASSIFIER)
    assert again is loaded, "the same process keeps the loaded predictor"


def test_activating_another_version_switches_the_cache_without_restart(make_bundle, photo_factory, tmp_path):
    first = model_version_activate(model_version_register(make_bundle(["A a", "B b"], seed=1)))
    assert runtime.get_active_model(ModelKind.CLASSIFIER).version.pk == first.pk
    second = model_version_register(make_bundle(["C c", "D d", "E e"], seed=2))
    assert runtime.get_active_model(ModelKind.CLASSIFIER).version.pk == first.pk
    model_version_activate(second)
    switched = runtime.get_active_model(ModelKind.CLASSIFIER)
    assert switched.version.pk == second.pk
    photo = photo_factory(tmp_path / "p.jpg", seed=1, colour=(200, 10, 10))
    ranked = switched.predictor.predict([photo], top_k=3)[0]
    assert {p.label for p in ranked} == {"C c", "D d", "E e"}
    assert sum(p.probability for p in ranked) == pytest.approx(1.0, abs=1e-4)


def test_warm_up_loads_every_active_kind(make_bundle):
    model_version_activate(model_version_register(make_bundle(["exterior", "interior", "other"], kind="gate")))
    warmed = runtime.warm_up_active_models()
    assert warmed[ModelKind.GATE] is not None and warmed[ModelKind.CLASSIFIER] is None
    assert set(runtime.loaded_models()) == {ModelKind.GATE}


def test_warm_up_loads_both_kinds_and_a_broken_one_spares_the_other(make_bundle):
    import shutil

    from django.core.files.storage import default_storage

    from classifier.services.registry import STORED_MANIFEST, model_version_bundle_dir

    gate = model_version_activate(model_version_register(make_bundle(["exterior", "interior", "other"], kind="gate")))
    classifier = model_version_activate(model_version_register(make_bundle(["A a", "B b"], seed=5)))
    warmed = runtime.warm_up_active_models()
    assert warmed[ModelKind.GATE].version == gate and warmed[ModelKind.CLASSIFIER].version == classifier
    assert runtime.warm_up_active_models() == warmed  # already held: nothing loads again

    runtime.clear_loaded_models()
    shutil.rmtree(model_version_bundle_dir(classifier))  # gone from this host's cache and from the media storage
    default_storage.delete(f"{classifier.bundle_path}/{STORED_MANIFEST}")
    warmed = runtime.warm_up_active_models()
    assert warmed[ModelKind.GATE].version == gate and warmed[ModelKind.CLASSIFIER] is None


def test_a_missing_bundle_is_a_clear_error_and_warm_up_survives_it(make_bundle, settings):
    import shutil

    from django.core.files.storage import default_storage

    from classifier.services.registry import STORED_MANIFEST, model_version_bundle_dir

    version = model_version_activate(model_version_register(make_bundle(["A a", "B b"], seed=3)))
    shutil.rmtree(model_version_bundle_dir(version))  # gone from this host's cache and from the media storage
    default_storage.delete(f"{version.bundle_path}/{STORED_MANIFEST}")
    with pytest.raises(runtime.ModelLoadError, match="Cannot load"):
        runtime.get_active_model(ModelKind.CLASSIFIER)
    assert runtime.warm_up_active_models()[ModelKind.CLASSIFIER] is None


def test_worker_hooks_warm_up_in_prefork_children_only(make_bundle, monkeypatch):
    import threading
    import time

    from classifier import worker

    calls = []

    def warm_up():
        time.sleep(0.2)  # slower than the hooks, so a ready hook that did not wait would be seen
        calls.append(threading.current_thread().name)

    monkeypatch.setattr(runtime, "warm_up_active_models", warm_up)
    worker._start_warm_up_unless_forking(instance=type("W", (), {"pool_cls": "celery.concurrency.prefork:TaskPool"})())
    worker._warm_up_when_ready()
    assert calls == [], "the prefork parent must not load torch models before forking"
    worker._warm_up_in_child()
    assert calls == ["MainThread"]
    # Other pools start loading at setup, in the background, and are ready only once it is done.
    worker._start_warm_up_unless_forking(instance=type("W", (), {"pool_cls": "solo"})())
    assert calls == ["MainThread"]
    worker._warm_up_when_ready()
    assert calls == ["MainThread", "carsite-warm-up"]


def test_compute_slots_default_to_one_per_core_and_follow_the_setting(settings, monkeypatch):
    from classifier import runtime

    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    settings.CARSITE_CLASSIFY_COMPUTE_SLOTS = 0
    settings.CARSITE_INFERENCE_THREADS = 1
    assert runtime.compute_slot_count() == 4
    settings.CARSITE_INFERENCE_THREADS = 2
    assert runtime.compute_slot_count() == 2
    settings.CARSITE_CLASSIFY_COMPUTE_SLOTS = 3
    assert runtime.compute_slot_count() == 3


def test_no_more_threads_compute_at_once_than_there_are_slots(settings, monkeypatch):
    import threading
    import time

    from classifier import runtime

    settings.CARSITE_CLASSIFY_COMPUTE_SLOTS = 2
    monkeypatch.setattr(runtime, "_compute_slots", None)  # built from the setting on first use
    inside, most_inside, guard = 0, 0, threading.Lock()

    def compute() -> None:
        nonlocal inside, most_inside
        with runtime.compute_slot():
            with guard:
                inside += 1
                most_inside = max(most_inside, inside)
            time.sleep(0.02)
            with guard:
                inside -= 1

    threads = [threading.Thread(target=compute) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert most_inside == 2


def test_a_registered_bundle_is_served_by_onnx_runtime_unless_torch_is_asked_for(make_bundle, settings):
    version = model_version_activate(model_version_register(make_bundle(["A a", "B b"], seed=4)))
    onnx = runtime.get_active_model(ModelKind.CLASSIFIER)
    assert onnx.predictor.backend == "onnxruntime" and onnx.version.pk == version.pk

    settings.CARSITE_INFERENCE_BACKEND = "torch"
    runtime.clear_loaded_models()
    eager = runtime.get_active_model(ModelKind.CLASSIFIER)
    assert eager.predictor.backend == "torch"
    x = onnx.predictor.preprocess([_photo_array()])
    assert abs(onnx.predictor.batch_probabilities(x) - eager.predictor.batch_probabilities(x)).max() <= 1e-5


def test_requiring_onnx_runtime_refuses_a_bundle_without_its_export(make_bundle, settings):
    from classifier.services.registry import model_version_bundle_dir

    version = model_version_activate(model_version_register(make_bundle(["A a", "B b"], seed=5)))
    (model_version_bundle_dir(version) / "onnx.json").unlink()
    settings.CARSITE_INFERENCE_BACKEND = "onnxruntime"
    with pytest.raises(runtime.ModelLoadError, match="no ONNX export"):
        runtime.get_active_model(ModelKind.CLASSIFIER)


def _photo_array():
    from PIL import Image

    return Image.new("RGB", (80, 60), (30, 120, 200))
