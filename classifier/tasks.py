"""Celery tasks of the classifier app. Thin: they take primary keys and call services."""

# --- model registry tasks (label_views, training) ---

# --- classification tasks ---
