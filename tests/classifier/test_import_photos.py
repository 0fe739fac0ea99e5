"""import_photos: manifest, label-folder and The Car Connection layouts; idempotent; clear reasons."""

import csv
import shutil
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from catalog import services as catalog_services
from catalog.models import CarImage, CarModel, ImageOrigin, ImageView
from classifier.services.photos import parse_tcc_filename, photos_import

pytestmark = pytest.mark.django_db

TCC_SPIDER = "Alfa Romeo_4C Spider_2020_67_17_230_17_4_73_46_157_24_RWD_2_2_Convertible_{}.jpg"
TCC_MDX = "Acura_MDX_{}_44_18_290_35_6_77_67_196_19_FWD_7_4_SUV_{}.jpg"


def test_parse_tcc_filename():
    assert parse_tcc_filename(TCC_SPIDER.format("IFZ")) == ("Alfa Romeo", "4C Spider", 2020)
    assert parse_tcc_filename("bmw_3 Series_2019_x.jpg") == ("BMW", "3 Series", 2019)
    assert parse_tcc_filename("holiday.jpg") is None
    assert parse_tcc_filename("Acura_MDX_20x9_a.jpg") is None


def test_tcc_names_are_imported_once(tmp_path, photo_factory):
    for i, suffix in enumerate(["aaa", "bbb", "ccc"]):
        photo_factory(tmp_path / TCC_SPIDER.format(suffix), seed=i, colour=(200, 30, 30))
    photo_factory(tmp_path / TCC_MDX.format(2019, "ddd"), seed=10, colour=(30, 30, 200))
    first = photos_import(tmp_path, year_as_label=True)
    assert first.counts == {"imported": 4, "duplicate": 0, "skipped": 0, "rejected": 0}
    assert sorted(first.car_models_created) == ["2019 Acura MDX", "2020 Alfa Romeo 4C Spider"]
    spider = CarModel.objects.get(label="2020 Alfa Romeo 4C Spider")
    assert spider.manufacturer.name == "Alfa Romeo" and spider.name == "4C Spider"
    assert set(CarImage.objects.values_list("origin", flat=True)) == {ImageOrigin.IMPORTED}
    assert set(CarImage.objects.values_list("view", flat=True)) == {ImageView.UNKNOWN}

    second = photos_import(tmp_path, year_as_label=True)
    assert second.counts == {"imported": 0, "duplicate": 4, "skipped": 0, "rejected": 0}
    assert second.car_models_created == []
    assert CarImage.objects.count() == 4
    assert sorted(second.image_ids) == sorted(first.image_ids)


def test_new_model_years_get_approximate_specs_from_the_photos_names(tmp_path, photo_factory, client):
    listed, _ = catalog_services.car_model_get_or_create(make="Acura", model="MDX", year=2019)
    catalog_services.specification_upsert(listed, values={"mpg_city": 19}, source="csv:car_specs.csv")
    photo_factory(tmp_path / TCC_SPIDER.format("aaa"), seed=1, colour=(200, 30, 30))
    photo_factory(tmp_path / TCC_MDX.format(2019, "bbb"), seed=2, colour=(30, 30, 200))
    result = photos_import(tmp_path, year_as_label=True)
    assert result.specs_from_names is not None
    assert (result.specs_from_names.counts["created"], result.specs_from_names.counts["skipped"]) == (1, 1)
    spider = CarModel.objects.select_related("specs").get(label="2020 Alfa Romeo 4C Spider")
    assert (spider.msrp_usd, spider.specs.horsepower, spider.specs.approximate) == (67000, 230, True)
    assert CarModel.objects.select_related("specs").get(pk=listed.pk).specs.approximate is False
    html = client.get(spider.get_absolute_url()).content.decode()
    assert 'data-testid="specs-approximate"' in html and "$67,000" in html, html


def test_without_year_as_label_photos_go_to_the_newest_catalog_model(tmp_path, photo_factory):
    newest, _ = catalog_services.car_model_get_or_create(make="Acura", model="MDX", year=2023)
    photo_factory(tmp_path / TCC_MDX.format(2011, "aaa"), seed=1, colour=(10, 200, 10))
    photo_factory(tmp_path / TCC_MDX.format(2017, "bbb"), seed=2, colour=(10, 10, 200))
    photo_factory(tmp_path / TCC_SPIDER.format("ccc"), seed=3, colour=(200, 10, 10))
    result = photos_import(tmp_path)
    assert result.counts["imported"] == 3
    assert CarImage.objects.filter(car_model=newest).count() == 2
    assert not CarModel.objects.filter(year__in=[2011, 2017]).exists()
    assert result.car_models_created == ["2020 Alfa Romeo 4C Spider"]


def test_label_folders_are_imported_once(tmp_path, photo_factory):
    for i in range(3):
        photo_factory(tmp_path / "2023 Audi A4" / f"{i}.jpg", seed=i, colour=(120, 120, 0))
        photo_factory(tmp_path / "2023 Volkswagen ID.4" / f"{i}.png", seed=100 + i, colour=(0, 120, 120))
    first = photos_import(tmp_path)
    assert first.counts["imported"] == 6
    assert CarModel.objects.get(label="2023 Audi A4").images.count() == 3
    assert CarModel.objects.get(label="2023 Volkswagen ID.4").images.count() == 3
    second = photos_import(tmp_path)
    assert second.counts == {"imported": 0, "duplicate": 6, "skipped": 0, "rejected": 0}
    assert CarImage.objects.count() == 6


def test_near_duplicates_are_reported_as_duplicates(tmp_path, photo_factory):
    from PIL import Image

    original = photo_factory(tmp_path / "2023 Audi A4" / "a.jpg", seed=1, colour=(120, 0, 0))
    with Image.open(original) as image:
        image.resize((320, 240)).save(tmp_path / "2023 Audi A4" / "b.jpg", quality=70)
    result = photos_import(tmp_path)
    assert result.counts["imported"] == 1 and result.counts["duplicate"] == 1
    assert "near-duplicate" in result.with_outcome("duplicate")[0].reason


def test_keep_near_duplicates_skips_only_exact_copies(tmp_path, photo_factory):
    from PIL import Image

    original = photo_factory(tmp_path / "2023 Audi A4" / "a.jpg", seed=1, colour=(120, 0, 0))
    with Image.open(original) as image:
        image.resize((320, 240)).save(tmp_path / "2023 Audi A4" / "b.jpg", quality=70)
    out = StringIO()
    call_command("import_photos", str(tmp_path), "--keep-near-duplicates", stdout=out)
    assert "2 imported, 0 duplicate" in out.getvalue()
    out = StringIO()
    call_command("import_photos", str(tmp_path), "--keep-near-duplicates", stdout=out)
    assert "0 imported, 2 duplicate" in out.getvalue(), "exact copies are still skipped: safe to run again"


def test_unreadable_and_unlabelled_files_are_rejected_with_reasons(tmp_path, photo_factory):
    (tmp_path / "2023 Audi A4").mkdir()
    (tmp_path / "2023 Audi A4" / "broken.jpg").write_bytes(b"not a jpeg at all")
    photo_factory(tmp_path / "holiday.jpg", seed=1, colour=(1, 2, 3))
    photo_factory(tmp_path / "2023 Audi A4" / "tiny.jpg", seed=2, colour=(1, 2, 3), size=(40, 30))
    result = photos_import(tmp_path)
    assert result.counts == {"imported": 0, "duplicate": 0, "skipped": 0, "rejected": 3}
    reasons = {item.path.name: item.reason for item in result.items}
    assert "cannot tell which car" in reasons["holiday.jpg"]
    assert "not an image" in reasons["broken.jpg"]
    assert "at least" in reasons["tiny.jpg"]
    assert not CarModel.objects.exists(), "a rejected photo leaves no car model behind"


def _write_manifest(folder, rows):
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "make", "model", "year", "view", "subject"])
        writer.writerows(rows)


def test_manifest_gives_car_view_and_skips_other_cars(tmp_path, photo_factory):
    images = tmp_path / "images"
    photo_factory(images / "one.jpg", seed=1, colour=(200, 0, 0))
    photo_factory(images / "two.jpg", seed=2, colour=(0, 200, 0))
    photo_factory(images / "rival.jpg", seed=3, colour=(0, 0, 200))
    _write_manifest(
        tmp_path,
        [
            ["one.jpg", "Acura", "NSX", "2017", "exterior", "labelled-model"],
            ["two.jpg", "Acura", "NSX", "2017", "interior", "labelled-model"],
            ["rival.jpg", "Acura", "NSX", "2017", "exterior", "other-car"],
        ],
    )
    result = photos_import(tmp_path, view_from_manifest=True, year_as_label=True)
    assert result.counts == {"imported": 2, "duplicate": 0, "skipped": 1, "rejected": 0}
    assert "other-car" in result.with_outcome("skipped")[0].reason
    views = dict(CarImage.objects.values_list("view", "view_confidence"))
    assert views == {"exterior": 1.0, "interior": 1.0}
    assert CarModel.objects.get().label == "2017 Acura NSX"
    # Pointing at the images folder finds the manifest one level up; nothing is imported twice.
    again = photos_import(images, view_from_manifest=True, year_as_label=True)
    assert again.counts == {"imported": 0, "duplicate": 2, "skipped": 1, "rejected": 0}


def test_manifest_views_are_ignored_without_the_flag(tmp_path, photo_factory):
    photo_factory(tmp_path / "images" / "one.jpg", seed=1, colour=(200, 0, 0))
    _write_manifest(tmp_path, [["one.jpg", "Acura", "NSX", "2017", "exterior", "labelled-model"]])
    photos_import(tmp_path, year_as_label=True)
    image = CarImage.objects.get()
    assert image.view == ImageView.UNKNOWN and image.view_confidence is None


def test_a_few_shared_photos_with_their_manifest(shared_data, tmp_path):
    source = shared_data / "car-photos"
    with (source / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    wanted = [r for r in rows if r["make"] == "Alfa Romeo"][:3] + [r for r in rows if r["subject"] == "other-car"][:1]
    (tmp_path / "images").mkdir()
    for row in wanted:
        shutil.copyfile(source / "images" / row["file"], tmp_path / "images" / row["file"])
    _write_manifest(tmp_path, [[r[c] for c in ("file", "make", "model", "year", "view", "subject")] for r in wanted])
    first = photos_import(tmp_path, view_from_manifest=True, year_as_label=True)
    second = photos_import(tmp_path, view_from_manifest=True, year_as_label=True)
    assert first.counts["skipped"] == second.counts["skipped"] == 1
    assert first.counts["imported"] + first.counts["duplicate"] == 3
    assert second.counts["imported"] == 0
    assert second.counts["duplicate"] == 3
    assert CarImage.objects.count() == first.counts["imported"]
    assert set(CarImage.objects.values_list("car_model__label", flat=True)) == {"2020 Alfa Romeo 4C Spider"}
    by_file = {r["file"]: r["view"] for r in wanted}
    imported = first.with_outcome("imported")
    for item in imported:
        assert CarImage.objects.get(pk=item.image_id).view == by_file[item.path.name]


def test_shared_tcc_names_without_manifest(shared_data, tmp_path):
    source = shared_data / "car-photos" / "images"
    names = sorted(p.name for p in source.glob("Acura_TLX_2019_*.jpg"))[:2]
    for name in names:
        shutil.copyfile(source / name, tmp_path / name)
    counts = [photos_import(tmp_path, year_as_label=True).counts for _ in range(2)]
    assert counts[0]["imported"] + counts[0]["duplicate"] == len(names) == counts[1]["duplicate"]
    assert CarModel.objects.get().label == "2019 Acura TLX"


def test_command_reports_counts_and_fails_clearly(tmp_path, photo_factory):
    photo_factory(tmp_path / "2023 Audi A4" / "a.jpg", seed=1, colour=(1, 100, 1))
    out = StringIO()
    call_command("import_photos", str(tmp_path), stdout=out)
    assert "1 imported, 0 duplicate, 0 skipped, 0 rejected" in out.getvalue()
    out = StringIO()
    call_command("import_photos", str(tmp_path), stdout=out)
    assert "0 imported, 1 duplicate" in out.getvalue()
    with pytest.raises(CommandError, match="not a folder"):
        call_command("import_photos", str(tmp_path / "missing"))
