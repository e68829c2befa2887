"""AES-256-GCM for one field value: a fresh random 96-bit nonce per encryption, bound to its context.

A sealed value is the string ``"epoch:aes256gcm:<key id>:<base64url(nonce | ciphertext | tag)>"``. The
associated data binds it to its subject and field name (``subject \\0 field``), so a ciphertext moved to
another subject's event or into another field fails to decrypt instead of reading as that field. It does
not bind the event type (an upcaster may rename a type) nor the stream and version (the codec decodes
without them; ``epoch copy`` moves events between streams' positions), so within one subject and field a
value copied from one event to another still reads: it is the same person's data in the same field.

A random 96-bit nonce per encryption keeps the chance of a repeat under one key below 2^-32 for the first
2^32 encryptions, NIST SP 800-38D's bound; a subject's key encrypts only that subject's fields.
"""

from __future__ import annotations

import base64
import os
from functools import cache
from typing import Any

from epoch.errors import MissingDependency

__all__ = ["PREFIX", "KEY_BYTES", "CipherFailed", "new_key", "new_key_id", "open_value", "parse", "seal_value"]

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
    sealed = _aesgcm()(key).encrypt(nonce, plaintext, _context(subject, field))
    return f"{PREFIX}{key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"


def parse(value: object) -> tuple[str, bytes] | None:
    """``(key id, nonce | ciphertext | tag)`` of a sealed value, or ``None`` for anything else."""
    if type(value) is not str or not value.startswith(PREFIX):
        return None
    key_id, separator, body = value[len(PREFIX) :].partition(":")
    if not separator:
        raise CipherFailed("a sealed value without a key id")
    try:
        raw = base64.urlsafe_b64decode(body.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise CipherFailed("a sealed value that is not base64") from exc
    if len(raw) < _NONCE_BYTES + _TAG_BYTES:
        raise CipherFailed("a sealed value too short to hold a nonce and a tag")
    return key_id, raw


def open_value(key: bytes, raw: bytes, subject: str, field: str) -> bytes:
    """The plaintext of a parsed sealed value; raises :class:`CipherFailed` when it does not authenticate."""
    from cryptography.exceptions import InvalidTag

    try:
        return bytes(_aesgcm()(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _context(subject, field)))
    except InvalidTag as exc:
        raise CipherFailed(
            "it does not decrypt with its key (tampered, or moved from another subject or field)"
        ) from exc
