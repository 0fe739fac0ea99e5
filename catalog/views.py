"""Server-rendered catalog pages; they read through ``catalog.selectors`` only."""

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from catalog import selectors
from catalog.models import CarModel, ImageView, Manufacturer


def home(request: HttpRequest) -> HttpResponse:
    context = {
        "model_count": selectors.car_model_list().count(),
        "manufacturer_count": selectors.manufacturer_list_with_models().count(),
    }
    return render(request, "catalog/home.html", context)


def manufacturer_list(request: HttpRequest) -> HttpResponse:
    return render(
        request, "catalog/manufacturer_list.html", {"manufacturers": selectors.manufacturer_list_with_models()}
    )


def manufacturer_detail(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        manufacturer = selectors.manufacturer_get(slug=slug)
    except Manufacturer.DoesNotExist:
        raise Http404("No such manufacturer.") from None
    car_models = selectors.car_model_list(manufacturer=manufacturer)
    return render(request, "catalog/manufacturer_detail.html", {"manufacturer": manufacturer, "car_models": car_models})


def car_model_detail(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        car_model = selectors.car_model_get(slug=slug)
    except CarModel.DoesNotExist:
        raise Http404("No such car model.") from None
    context = {
        "car_model": car_model,
        "specs": getattr(car_model, "specs", None) if hasattr(car_model, "specs") else None,
        "line_years": selectors.car_model_line_years(car_model),
        "exterior_images": selectors.car_model_gallery(car_model, view=ImageView.EXTERIOR),
        "interior_images": selectors.car_model_gallery(car_model, view=ImageView.INTERIOR),
    }
    return render(request, "catalog/car_model_detail.html", context)
