from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from subscriptions.crypto import CredentialDecryptionError
from subscriptions.services import credential_rotate_keys


class Command(BaseCommand):
    help = (
        "Re-encrypt every exchange credential with the newest key of "
        "CREDENTIALS_ENCRYPTION_KEYS (prepend a new key, run this, then drop the old ones)."
    )

    def handle(self, *args: object, **options: object) -> None:
        try:
            count = credential_rotate_keys()
        except CredentialDecryptionError as exc:
            raise CommandError(f"{exc}: keep the old key in the list until rotated") from exc
        self.stdout.write(f"re-encrypted {count} credentials with the newest key")
