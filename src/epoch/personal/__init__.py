"""Personal data (crypto-shredding): fields marked :class:`Personal` are encrypted under per-subject keys
kept by a :class:`KeyStore` in the store's own database; ``await keys.forget(subject)`` erases the keys,
and those fields then decode to their redacted value. See docs/personal-data.md.
"""

from __future__ import annotations

from epoch.personal.batches import keys_of_codec, preloading, subjects_in
from epoch.personal.fields import SUBJECTS_KEY, PersonalFields, seal_entries
from epoch.personal.keystore import KeyStore
from epoch.personal.marker import Personal
from epoch.personal.shown import ERASED, SEALED, shown_record

__all__ = [
    "ERASED",
    "SEALED",
    "SUBJECTS_KEY",
    "KeyStore",
    "Personal",
    "PersonalFields",
    "keys_of_codec",
    "preloading",
    "seal_entries",
    "shown_record",
    "subjects_in",
]
