from django.apps import AppConfig


class ToolingConfig(AppConfig):
    """Holds the tooling's management commands (demo, demo_live, bench_*, exchange_simulator)."""

    name = "tooling"
    verbose_name = "Tooling"
