from rest_framework.routers import DefaultRouter


def register(router: DefaultRouter) -> None:
    """Classification API routes — filled in by the classification work."""
