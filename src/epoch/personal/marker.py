"""The ``Personal`` marker: which fields of an event hold personal data, and whose."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Personal"]


@dataclass(frozen=True, slots=True)
class Personal:
    """Marks an event field as personal data: ``email: Annotated[str, Personal(subject="user_id")]``.

    ``subject`` names the field of the same event that identifies the person (the *subject*, usually a
    surrogate id such as a UUID). A :class:`~epoch.Codec` with ``keys=`` encrypts the field under that
    subject's key; once ``await keys.forget(subject)`` has run, the field decodes to its default, or
    ``None`` when it has none. The subject field itself stays in clear (the key is found by it).
    """

    subject: str
