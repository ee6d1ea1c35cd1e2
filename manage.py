#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pushsite.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A setting missing or wrong: pushsite/settings.py's sentence says which and how
        # to fix it, and a traceback of Django's settings machinery would bury it.
        sys.exit(f"Configuration error: {exc}")


if __name__ == "__main__":
    main()
