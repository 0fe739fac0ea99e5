from django.contrib.admin.apps import AdminConfig


class CarsiteAdminConfig(AdminConfig):
    """django.contrib.admin with carsite's admin site (rate-limited sign-in) as ``admin.site``."""

    default_site = "carsite.admin_site.CarsiteAdminSite"
