from __future__ import annotations

from django.core.management.base import BaseCommand

from strategies.services import registry_rebuild


class Command(BaseCommand):
    help = "Rebuild the Redis strategy registry and the beat schedule from the database."

    def handle(self, *args: object, **options: object) -> None:
        count = registry_rebuild()
        self.stdout.write(f"registry rebuilt: {count} strategies with active subscribers")
