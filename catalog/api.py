from rest_framework.routers import DefaultRouter


def register(router: DefaultRouter) -> None:
    """Catalog API routes (manufacturers, models, images) — filled in by the API work."""
