"""Admin pages for classifications and visitor feedback."""
