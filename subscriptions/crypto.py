"""Encryption at rest for exchange credentials: the platform's Fernet helper (core.crypto),
under the names the credential code uses."""

from __future__ import annotations

from core.crypto import SecretDecryptionError as CredentialDecryptionError
from core.crypto import _fernet, decrypt_secret, encrypt_secret, rotate_secret

__all__ = [
    "CredentialDecryptionError",
    "_fernet",
    "decrypt_secret",
    "encrypt_secret",
    "rotate_secret",
]
