"""ModelVersion admin: list, detail with report and images, activation; staff only."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from PIL import Image

from classifier.models import ModelVersion
from classifier.services.registry import model_version_activate, model_version_bundle_dir, model_version_register

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_user(
        "admin", "admin@example.com", "pw-123456", is_staff=True, is_superuser=True
    )
    client.force_login(user)
    return client


@pytest.fixture
def version_with_report(make_bundle):
    version = model_version_register(
        make_bundle(["Acura MDX", "Audi A4"], metrics={"top1": 0.875, "ece_calibrated": 0.042})
    )
    bundle = model_version_bundle_dir(version)
    (bundle / "report.csv").write_text(
        ",precision,recall,f1-score,support\nAcura MDX,0.9,0.8,0.85,10\nAudi A4,0.7,0.95,0.81,8\n"
    )
    Image.new("RGB", (40, 30), (255, 0, 0)).save(bundle / "curves.png")
    Image.new("RGB", (30, 30), (0, 0, 255)).save(bundle / "confusion_matrix.png")
    return version


def test_list_shows_versions_with_metrics(staff_client, version_with_report):
    response = staff_client.get(reverse("admin:classifier_modelversion_changelist"))
    assert response.status_code == 200
    page = response.content.decode()
    assert version_with_report.version in page
    assert "0.875" in page and "0.042" in page
    filtered = staff_client.get(reverse("admin:classifier_modelversion_changelist"), {"kind__exact": "gate"})
    assert version_with_report.version not in filtered.content.decode()


def test_detail_shows_metrics_report_images_and_label_mapping(staff_client, version_with_report):
    url = reverse("admin:classifier_modelversion_change", args=[version_with_report.pk])
    response = staff_client.get(url)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Top-1 accuracy" in page and "0.8750" in page
    assert "<td>Acura MDX</td>" in page and "<td>0.95</td>" in page
    for name in ("curves.png", "confusion_matrix.png"):
        image_url = reverse("admin:classifier_modelversion_report_image", args=[version_with_report.pk, name])
        assert image_url in page
        image = staff_client.get(image_url)
        assert image.status_code == 200 and image["Content-Type"] == "image/png"
        assert b"".join(image.streaming_content).startswith(b"\x89PNG")
    assert 'id="activate-model-version"' in page
    assert "Audi A4" in page  # the label mapping inline


def test_detail_shows_the_cross_validated_figures_with_their_fold_count(staff_client, make_bundle):
    metrics = {
        "evaluated_on": "out-of-fold (5-fold grouped cross-validation)",
        "folds": 5,
        "top1": 0.777,
        "top1_mean": 0.776,
        "top1_std": 0.105,
        "coverage": 0.568,
        "abstain_threshold": 0.61,
    }
    version = model_version_register(make_bundle(["Acura MDX", "Audi A4"], metrics=metrics))
    Image.new("RGB", (30, 30), (0, 255, 0)).save(model_version_bundle_dir(version) / "risk_coverage.png")
    page = staff_client.get(reverse("admin:classifier_modelversion_change", args=[version.pk])).content.decode()
    assert '<th scope="row">Cross-validation folds</th><td>5</td>' in page
    assert "out-of-fold (5-fold grouped cross-validation)" in page
    assert "Top-1 accuracy, mean over folds" in page and "0.7760" in page and "0.1050" in page
    assert "Coverage (share answered) at the abstain threshold" in page and "0.5680" in page
    assert reverse("admin:classifier_modelversion_report_image", args=[version.pk, "risk_coverage.png"]) in page


def test_report_image_view_serves_nothing_but_report_images(staff_client, version_with_report):
    prefix = reverse("admin:classifier_modelversion_report_image", args=[version_with_report.pk, "x"])[:-1]
    for name in ("bundle.json", "weights.safetensors", "report.csv"):
        assert staff_client.get(prefix + name).status_code == 404, name
    traversal = staff_client.get(prefix + "..%2Fbundle.json")
    assert traversal.status_code != 200 and b"labels" not in traversal.content
    missing = reverse("admin:classifier_modelversion_report_image", args=[version_with_report.pk + 99, "curves.png"])
    assert staff_client.get(missing).status_code == 404


def test_activate_button_and_action(staff_client, version_with_report, make_bundle):
    url = reverse("admin:classifier_modelversion_activate", args=[version_with_report.pk])
    assert staff_client.get(url).status_code == 405, "activation changes state: POST only"
    response = staff_client.post(url)
    assert response.status_code == 302
    version_with_report.refresh_from_db()
    assert version_with_report.is_active

    other = model_version_register(make_bundle(["X x", "Y y"], seed=7))
    response = staff_client.post(
        reverse("admin:classifier_modelversion_changelist"),
        {"action": "activate_selected", "_selected_action": [other.pk]},
    )
    assert response.status_code == 302
    assert ModelVersion.objects.get(is_active=True, kind="classifier") == other


def test_action_refuses_two_versions_of_one_kind(staff_client, version_with_report, make_bundle):
    other = model_version_register(make_bundle(["X x", "Y y"], seed=8))
    staff_client.post(
        reverse("admin:classifier_modelversion_changelist"),
        {"action": "activate_selected", "_selected_action": [other.pk, version_with_report.pk]},
    )
    assert not ModelVersion.objects.filter(is_active=True).exists()


def test_active_version_cannot_be_deleted(staff_client, version_with_report):
    model_version_activate(version_with_report)
    response = staff_client.post(
        reverse("admin:classifier_modelversion_delete", args=[version_with_report.pk]), {"post": "yes"}
    )
    assert response.status_code == 403
    assert ModelVersion.objects.filter(pk=version_with_report.pk).exists()


def test_anonymous_and_non_staff_are_sent_to_login(client, version_with_report):
    urls = [
        reverse("admin:classifier_modelversion_changelist"),
        reverse("admin:classifier_modelversion_change", args=[version_with_report.pk]),
        reverse("admin:classifier_modelversion_report_image", args=[version_with_report.pk, "curves.png"]),
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    activate_url = reverse("admin:classifier_modelversion_activate", args=[version_with_report.pk])
    assert client.post(activate_url).status_code == 302
    version_with_report.refresh_from_db()
    assert not version_with_report.is_active
    user = get_user_model().objects.create_user("visitor", "v@example.com", "pw-123456")
    client.force_login(user)
    assert client.get(urls[2]).status_code == 302


def test_detail_shows_a_gates_cross_validated_recalls(staff_client, make_bundle):
    metrics = {
        "macro_recall": 0.932,
        "recall_exterior": 0.985,
        "recall_interior": 0.955,
        "recall_other": 0.857,
        "cv_folds": 5,
        "n_train": 238,
    }
    gate = model_version_register(make_bundle(["exterior", "interior", "other"], kind="gate", metrics=metrics))
    page = staff_client.get(reverse("admin:classifier_modelversion_change", args=[gate.pk])).content.decode()
    for text in ("Macro recall (gate views)", "0.9320", "Other recall", "0.8570", "Interior recall", "0.9550"):
        assert text in page
    assert "Cross-validation folds" in page


def test_detail_shows_how_many_feedback_photos_a_classifier_learned_from(staff_client, make_bundle):
    metrics = {"top1": 0.8, "n_train": 120, "n_feedback": 7}
    version = model_version_register(make_bundle(["Acura MDX", "Audi A4"], seed=3, metrics=metrics))
    page = staff_client.get(reverse("admin:classifier_modelversion_change", args=[version.pk])).content.decode()
    assert "Accepted feedback photos among them" in page
