from django.urls import path

from classifier import views

app_name = "classifier"
urlpatterns = [
    path("classify/", views.upload, name="upload"),
    path("supported-models/", views.supported_models, name="supported_models"),
    path("classify/<uuid:pk>/", views.result, name="result"),
    path("classify/<uuid:pk>/panel/", views.result_fragment, name="result-fragment"),
    path("classify/<uuid:pk>/feedback/", views.feedback, name="feedback"),
]
