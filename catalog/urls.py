from django.urls import path

from catalog import views

app_name = "catalog"
urlpatterns = [
    path("", views.home, name="home"),
    path("catalog/", views.manufacturer_list, name="manufacturer_list"),
    path("catalog/<slug:slug>/", views.manufacturer_detail, name="manufacturer"),
    path("cars/<slug:slug>/", views.car_model_detail, name="car_model"),
]
