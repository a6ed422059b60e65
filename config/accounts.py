"""Accounts: the writes of sign-up.

Emails are unique whatever their case (``Foo@X.com`` is ``foo@x.com``). The user model is
Django's own (there is no custom one), so no constraint on ``Lower(email)`` can be declared on
it, and a raw index on ``auth_user`` would fail to build on a database that already holds such
duplicates. Registration checks instead, under a Redis lock on the address: ``select_for_update``
cannot serialise two sign-ups with one new address, since there is no row yet to lock.
"""

from __future__ import annotations

import hashlib

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from core.locks import redis_lock

# Held from the check to the commit: a second sign-up with the address waits for none of it,
# it is told to retry (the first one is about to take the address).
EMAIL_LOCK_TTL_S = 30


def email_lock_key(email: str) -> str:
    # Hashed: no address is kept in Redis.
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return f"lock:register:email:{digest}"


def user_register(*, username: str, email: str, password: str) -> AbstractBaseUser:
    """Create an account; ValidationError on "email" when another account has the address
    in any case, or is being created with it right now."""
    with redis_lock(key=email_lock_key(email), ttl_s=EMAIL_LOCK_TTL_S) as token:
        if token is None:
            raise ValidationError({"email": "This email is being registered right now."})
        users = get_user_model().objects
        if users.filter(email__iexact=email.strip()).exists():
            raise ValidationError({"email": "This email is already registered."})
        with transaction.atomic():  # committed before the lock is released
            return users.create_user(username=username, email=email, password=password)
