"""Encryption at rest with MultiFernet, and the :class:`Secret` wrapper that keeps values boxed.

Keys come from ``settings.OAUTH_ENCRYPTION_KEYS`` (newest first) at call time: the first key
encrypts, every key decrypts, so a new key is added in front and the old one stays until
``manage.py rotate_encryption_keys`` has re-encrypted everything.
"""
from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from .exceptions import DecryptionFailed, EncryptionError, EncryptionKeyMissing

MASK = "********"


@lru_cache(maxsize=8)
def _multifernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.strip().encode()) for key in keys])
    except (ValueError, TypeError):
        raise EncryptionError(
            "OAUTH_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe base64 "
            "bytes). Generate one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        ) from None


def get_fernet() -> MultiFernet:
    """The MultiFernet for the keys configured now."""
    keys = tuple(k for k in (getattr(settings, "OAUTH_ENCRYPTION_KEYS", None) or []) if k.strip())
    if not keys:
        raise EncryptionKeyMissing()
    return _multifernet(keys)


def encrypt(plaintext: str) -> str:
    """Encrypt ``plaintext`` under the newest key; returns the Fernet token as text."""
    return get_fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str, *, field: str = "secret") -> str:
    """Decrypt with any configured key; a wrong key raises, it never returns ciphertext."""
    try:
        return get_fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise DecryptionFailed(
            f"The stored {field} could not be decrypted with any key in OAUTH_ENCRYPTION_KEYS. Put "
            "back the key it was written with (older keys go after the newest), then run "
            "'manage.py rotate_encryption_keys' before removing it."
        ) from None


def rotate(ciphertext: str) -> str:
    """Re-encrypt a stored value under the newest key (MultiFernet.rotate)."""
    try:
        return get_fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise DecryptionFailed() from None


def is_current(ciphertext: str) -> bool:
    """True when the newest key alone opens ``ciphertext`` (nothing to rotate)."""
    keys = tuple(k for k in settings.OAUTH_ENCRYPTION_KEYS if k.strip())
    try:
        Fernet(keys[0].strip().encode()).decrypt(ciphertext.encode())
    except InvalidToken:
        return False
    return True


class Secret:
    """A secret value that does not leak by accident.

    ``str()``, ``repr()``, templates, JSON encoders and f-strings all see ``********``; only
    :meth:`reveal` returns the plaintext. A value loaded from the database holds its ciphertext and
    is decrypted only when revealed, so listing credentials never needs the key.
    """

    __slots__ = ("_plaintext", "_ciphertext", "_field")

    def __init__(
        self, plaintext: str | None = None, *, ciphertext: str | None = None, field: str = "secret"
    ) -> None:
        if (plaintext is None) == (ciphertext is None):
            raise ValueError("Secret needs exactly one of plaintext or ciphertext")
        self._plaintext = plaintext
        self._ciphertext = ciphertext
        self._field = field

    @classmethod
    def from_ciphertext(cls, ciphertext: str, *, field: str = "secret") -> Secret:
        return cls(ciphertext=ciphertext, field=field)

    def reveal(self) -> str:
        """The plaintext. Call it only where the secret leaves for Google."""
        if self._plaintext is None:
            self._plaintext = decrypt(self._ciphertext, field=self._field)
        return self._plaintext

    @property
    def ciphertext(self) -> str:
        """The stored form: the loaded ciphertext, or a fresh encryption of a new value."""
        if self._ciphertext is None:
            self._ciphertext = encrypt(self._plaintext)
        return self._ciphertext

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self.reveal() == other.reveal()
        if isinstance(other, str):
            return self.reveal() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.reveal())

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"<Secret {self._field}: {MASK}>"

    def __format__(self, spec: str) -> str:
        return MASK

    def __reduce__(self):
        # Pickling (cache, Celery) keeps only ciphertext.
        return (_secret_from_ciphertext, (self.ciphertext, self._field))

    def __deepcopy__(self, memo) -> Secret:
        return self


def _secret_from_ciphertext(ciphertext: str, field: str) -> Secret:
    return Secret(ciphertext=ciphertext, field=field)
