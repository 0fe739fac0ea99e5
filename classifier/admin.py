"""Admin for the classifier app, split by concern so each part stays readable."""

from classifier import admin_classifications, admin_registry  # noqa: F401  (registers the ModelAdmins)
