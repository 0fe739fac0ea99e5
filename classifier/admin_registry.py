"""Admin pages for the model registry (ModelVersion)."""
