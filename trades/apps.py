from django.apps import AppConfig


class TradesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "trades"

    def ready(self) -> None:
        # Connects the equity curve to subscribing and to capital changes, in every process.
        from trades import positions  # noqa: F401
