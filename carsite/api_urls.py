"""Every app registers its API views on one router under /api/v1/."""

from rest_framework.routers import DefaultRouter

from catalog.api import register as register_catalog
from classifier.api import register as register_classifier

router = DefaultRouter()
register_catalog(router)
register_classifier(router)

urlpatterns = router.urls
