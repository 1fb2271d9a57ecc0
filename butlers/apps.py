"""The project package as a Django app, so its deployment checks run with ``manage.py check``."""
from django.apps import AppConfig


class ButlersConfig(AppConfig):
    name = "butlers"
    verbose_name = "Butlers project"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
