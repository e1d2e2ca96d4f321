"""aotune package."""
