"""AES-256-GCM for one field value: a fresh random 96-bit nonce per encryption, bound to its context.

A sealed value is the string ``"epoch:aes256gcm:<key id>:<base64(nonce | ciphertext | tag)>"``. The
associated data binds it to its subject and field name (``subject \\0 field``), so a ciphertext moved to
another subject's event or into another field fails to decrypt instead of reading as that field. It does
not bind the event type (an upcaster may rename a type) nor the stream and version (the codec decodes
without them; ``epoch copy`` moves events between streams' positions), so within one subject and field a
value copied from one event to another still reads: it is the same person's data in the same field.

A random 96-bit nonce per encryption keeps the chance of a repeat under one key below 2^-32 for the first
2^32 encryptions, NIST SP 800-38D's bound; a subject's key encrypts only that subject's fields.
"""

from __future__ import annotations

import binascii
import os
from functools import cache, lru_cache
from typing import Any

from epoch.errors import MissingDependency

__all__ = [
    "KEY_BYTES",
    "PREFIX",
    "CipherFailed",
    "drop_ciphers",
    "new_key",
    "new_key_id",
    "open_value",
    "parse",
    "seal_value",
]

PREFIX = "epoch:aes256gcm:"
"""Every sealed value starts with this; a stored value without it was written in clear (docs)."""

KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16


class CipherFailed(Exception):
    """A sealed value that does not decrypt with its key (tampered, truncated or moved)."""


@cache
def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingDependency("cryptography", "crypto") from exc
    return AESGCM


@cache
def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


@lru_cache(maxsize=4096)
def _cipher(key: bytes) -> Any:
    # One AESGCM per key (its key schedule is set up once, ~1 µs): decoding a stream reuses its subject's.
    return _aesgcm()(key)


def drop_ciphers() -> None:
    """Let go of every cached cipher (after a forget: no erased key stays in this process)."""
    _cipher.cache_clear()


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    _aesgcm()  # fail early, with the extra's name, when cryptography is missing
    return os.urandom(KEY_BYTES)


def new_key_id() -> str:
    """A random key id (64 bits, 16 hex digits): writers never need to agree on one."""
    return os.urandom(8).hex()


def _context(subject: str, field: str) -> bytes:
    return subject.encode("utf-8", "surrogatepass") + b"\0" + field.encode("utf-8", "surrogatepass")


def seal_value(key_id: str, key: bytes, plaintext: bytes, subject: str, field: str) -> str:
    """``plaintext`` encrypted under ``key`` with a fresh nonce, as a sealed string."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = _cipher(key).encrypt(nonce, plaintext, _context(subject, field))
    return f"{PREFIX}{key_id}:{binascii.b2a_base64(nonce + sealed, newline=False).decode('ascii')}"


def parse(value: object) -> tuple[str, bytes] | None:
    """``(key id, nonce | ciphertext | tag)`` of a sealed value, or ``None`` for anything else."""
    if type(value) is not str or not value.startswith(PREFIX):
        return None
    key_id, separator, body = value[len(PREFIX) :].partition(":")
    if not separator:
        raise CipherFailed("a sealed value without a key id")
    try:
        raw = binascii.a2b_base64(body.encode("ascii"), strict_mode=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise CipherFailed("a sealed value that is not base64") from exc
    if len(raw) < _NONCE_BYTES + _TAG_BYTES:
        raise CipherFailed("a sealed value too short to hold a nonce and a tag")
    return key_id, raw


def open_value(key: bytes, raw: bytes, subject: str, field: str) -> bytes:
    """The plaintext of a parsed sealed value; raises :class:`CipherFailed` when it does not authenticate."""
    try:
        return bytes(_cipher(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _context(subject, field)))
    except _invalid_tag() as exc:
        raise CipherFailed(
            "it does not decrypt with its key (tampered, or moved from another subject or field)"
        ) from exc
