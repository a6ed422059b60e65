from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from notifications.services import webhook_rotate_secrets
from subscriptions.crypto import CredentialDecryptionError
from subscriptions.services import credential_rotate_keys


class Command(BaseCommand):
    help = (
        "Re-encrypt every exchange credential and webhook secret with the newest key of "
        "CREDENTIALS_ENCRYPTION_KEYS (prepend a new key, run this, then drop the old ones)."
    )

    def handle(self, *args: object, **options: object) -> None:
        try:
            count = credential_rotate_keys()
            webhooks = webhook_rotate_secrets()
        except CredentialDecryptionError as exc:
            raise CommandError(f"{exc}: keep the old key in the list until rotated") from exc
        self.stdout.write(
            f"re-encrypted {count} credentials and {webhooks} webhook secrets with the newest key"
        )
