"""Deployment checks of the project wiring (``manage.py check --deploy``)."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.staticfiles, deploy=True)
def check_static_manifest(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """With DEBUG off, static files are served from the manifest written by ``collectstatic``.

    Without it every page that names a static file (the whole admin, the dashboard) answers 500
    ("Missing staticfiles manifest entry").
    """
    backend = settings.STORAGES.get("staticfiles", {}).get("BACKEND", "")
    if settings.DEBUG or "Manifest" not in backend:
        return []
    manifest = Path(settings.STATIC_ROOT) / "staticfiles.json"
    if manifest.is_file():
        return []
    return [
        checks.Error(
            f"The static files manifest {manifest} is missing: with DEBUG off, every admin and "
            "dashboard page would answer 500 (Missing staticfiles manifest entry).",
            hint="Run: python manage.py collectstatic --noinput (with the same environment as "
            "the web process), once per deployment.",
            id="butlers.E001",
        )
    ]
