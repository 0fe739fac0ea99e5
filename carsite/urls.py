from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

handler404 = "carsite.errors.page_not_found"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("carsite.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script from its own URL: no inline script. (ReDoc is not
    # offered: its renderer writes inline styles, which the Content-Security-Policy blocks.)
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("", include("classifier.urls")),
    path("", include("catalog.urls")),
]

if settings.SERVE_MEDIA:
    # The embedded default has no front proxy; a production deployment may serve media itself.
    # Registered model bundles share the media storage but are not the site's to serve.
    media_prefix = settings.MEDIA_URL.lstrip("/")
    urlpatterns += [
        re_path(rf"^{media_prefix}(?!model-bundles/)(?P<path>.*)$", serve, {"document_root": settings.MEDIA_ROOT})
    ]
