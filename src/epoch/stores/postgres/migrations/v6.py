"""Migration 6: the key table of personal data (crypto-shredding, docs/personal-data.md).

``epoch_keys`` holds one row per key of a subject (the person personal fields are encrypted for);
forgetting a subject deletes its rows and bumps ``epoch_key_changes``, the one-row counter other
processes poll to drop their cached keys within a second. No function changes.
"""

from __future__ import annotations

__all__ = ["SQL"]

SQL = """
CREATE TABLE IF NOT EXISTS epoch_keys (
    subject text   NOT NULL,
    key_id  text   NOT NULL,
    key     bytea  NOT NULL,
    created bigint NOT NULL,
    PRIMARY KEY (subject, key_id)
);
CREATE TABLE IF NOT EXISTS epoch_key_changes (
    id      integer PRIMARY KEY CHECK (id = 1),
    changes bigint  NOT NULL
);
INSERT INTO epoch_key_changes (id, changes) VALUES (1, 0) ON CONFLICT DO NOTHING;
"""
