from django.apps import AppConfig


class OAuthConfig(AppConfig):
    name = "oauth"
    verbose_name = "Google OAuth"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from . import notifications, webhooks  # noqa: F401  (the post_save receiver; Celery tasks)
