"""Encryption at rest for the secrets users hand the platform (exchange credentials, webhook
secrets): Fernet, with key rotation through MultiFernet, keyed by CREDENTIALS_ENCRYPTION_KEYS."""

from __future__ import annotations

import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretDecryptionError(RuntimeError):
    """The ciphertext was not made with any configured key."""


@functools.cache
def _fernet() -> MultiFernet:
    # The first key encrypts; every key decrypts, so old ciphertexts survive a rotation.
    return MultiFernet([Fernet(key) for key in settings.CREDENTIALS_ENCRYPTION_KEYS])


def encrypt_secret(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt_secret(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretDecryptionError(
            "credential cannot be decrypted with the configured keys"
        ) from exc


def rotate_secret(token: str) -> str:
    """Re-encrypt with the newest key."""
    return _fernet().rotate(token.encode()).decode()
