"""django-eventstream in its README's default setup, for comparison (bench/.venv only)."""
