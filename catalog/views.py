from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from catalog import selectors


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "catalog/home.html", {"model_count": selectors.car_model_list().count()})
