"""Stream versions over HTTP: the version as an ``ETag``, ``If-Match``/``If-None-Match`` as an expected version.

The ETag of a resource backed by one stream is the stream's version as a strong entity tag (``"3"``):
the representation is a function of the state, and the state of a stream at a version never changes,
so the same version always means the same bytes. ``If-Match`` is compared as RFC 9110 says for
state-changing requests, except that a weak tag (``W/"3"``) is accepted as its strong twin: proxies
that compress a response (nginx's gzip) weaken the tags they pass on, and the version is what matters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from epoch.records import ANY, NO_STREAM, STREAM_EXISTS, ExpectedVersion

__all__ = [
    "ABSENT",
    "Headers",
    "PreconditionError",
    "command_id_from",
    "etag",
    "expected_version_from",
    "not_modified",
    "precondition_of",
    "version_of_etag",
]

# One entity tag of a list: optional W/, then a quoted version (the only tags this module ever issues).
_TAG = re.compile(r'\s*(W/)?"([^"]*)"\s*(?:,|$)')
_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, the characters a header value may hold plainly


Headers = Mapping[str, str]
"""Request headers, looked up case-insensitively by lower-case name: Starlette's (and FastAPI's)
``request.headers``. A header sent on several lines is read as one comma-separated list (RFC 9110
section 5.3) when the mapping has ``getlist``, as Starlette's has; a plain mapping holds one line each."""


class PreconditionError(ValueError):
    """A precondition or idempotency header the API cannot use; ``status`` is the HTTP status to answer.

    400 for a malformed header, 428 (Precondition Required) when ``If-Match`` is required but missing.
    """

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(status, title, detail)
        self.status = status
        self.title = title
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


def _lines(headers: Headers, name: str) -> list[str]:
    """Every line of header ``name`` (lower-case), in the order sent."""
    getlist = getattr(headers, "getlist", None)
    if callable(getlist):
        return [str(line) for line in getlist(name)]
    value = headers.get(name)
    return [] if value is None else [value]


def _field(headers: Headers, name: str) -> str | None:
    """Header ``name`` as one value: its lines joined with ", ", as RFC 9110 combines a list header."""
    lines = _lines(headers, name)
    return ", ".join(lines) if lines else None


def etag(version: int) -> str:
    """The strong entity tag of a stream at ``version``: ``"3"``."""
    return f'"{version}"'


def _tags(header: str, name: str) -> list[str]:
    tags, at = [], 0
    while at < len(header):
        match = _TAG.match(header, at)
        if match is None or match.end() == at:
            raise PreconditionError(400, "Malformed precondition", f"{name}: not a list of entity tags: {header!r}")
        tags.append(match.group(2))
        at = match.end()
    if not tags:
        raise PreconditionError(400, "Malformed precondition", f"{name}: empty")
    return tags


def version_of_etag(tag: str, name: str = "If-Match") -> int:
    """The stream version an entity tag's opaque part names; raises :class:`PreconditionError` (400).

    Only the digits :func:`etag` writes name a version: ``"7"``, never ``"007"``, which is another entity
    tag (RFC 9110 compares tags as strings)."""
    canonical = tag == "0" or not tag.startswith("0")
    if not tag.isascii() or not tag.isdigit() or len(tag) > 20 or not canonical:
        raise PreconditionError(400, "Malformed precondition", f'{name}: "{tag}" is not a stream version')
    return int(tag)


class _Absent:
    """No precondition header: the caller decides what that means."""


ABSENT = _Absent()


def precondition_of(headers: Headers, *, required: bool = False) -> ExpectedVersion | int | None | _Absent:
    """What a request's precondition headers ask for, or :data:`ABSENT` when it has none (see
    :func:`expected_version_from`)."""
    if_match = _field(headers, "if-match")
    if_none_match = _field(headers, "if-none-match")
    if if_match is not None and if_none_match is not None:
        raise PreconditionError(400, "Malformed precondition", "If-Match and If-None-Match together")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise PreconditionError(400, "Malformed precondition", "If-None-Match on a write must be *")
        return NO_STREAM
    if if_match is None:
        if required:
            raise PreconditionError(428, "Precondition Required", "this request needs an If-Match header")
        return ABSENT
    if if_match.strip() == "*":
        return STREAM_EXISTS
    tags = _tags(if_match, "If-Match")
    if len(tags) > 1:
        raise PreconditionError(400, "Malformed precondition", "If-Match: give one entity tag, not several")
    return version_of_etag(tags[0])


def expected_version_from(
    headers: Headers, missing: ExpectedVersion | int | None = ANY, *, required: bool = False
) -> ExpectedVersion | int | None:
    """The ``expected_version`` a request's preconditions ask for.

    ``If-Match: "3"`` → 3, ``If-Match: *`` → ``STREAM_EXISTS``, ``If-None-Match: *`` → ``NO_STREAM``
    (create only). Without either header: ``missing`` (``ANY`` by default), or 428 Precondition
    Required when ``required``. Raises :class:`PreconditionError` (400) for both headers at once, a tag
    that is not a version, a list of several tags (a command has one expected version), or an
    ``If-None-Match`` other than ``*`` on a write. (:func:`epoch.http.execute` instead lets a request
    without a precondition take the handler's retrying path.)
    """
    found = precondition_of(headers, required=required)
    return missing if isinstance(found, _Absent) else found


def not_modified(headers: Headers, version: int | None) -> bool:
    """Whether a read may answer 304 Not Modified: its ``If-None-Match`` names ``version`` (or is ``*``
    and the stream exists). Tags that are not versions never match."""
    header = _field(headers, "if-none-match")
    if header is None or version is None:
        return False
    if header.strip() == "*":
        return True
    try:
        return str(version) in _tags(header, "If-None-Match")
    except PreconditionError:
        return False


def command_id_from(headers: Headers) -> str | None:
    """The ``Idempotency-Key`` header as a command id (``None`` without one).

    The key is the command's id for :meth:`epoch.CommandHandler.execute`, so sending a request again
    with the same key returns the first execution's result instead of deciding again. Raises
    :class:`PreconditionError` (400) for a key that is empty, longer than 255 characters or not
    visible ASCII, and for a key sent on more than one line (a request has one key).
    """
    lines = _lines(headers, "idempotency-key")
    if not lines:
        return None
    if len(lines) > 1:
        raise PreconditionError(400, "Malformed Idempotency-Key", "Idempotency-Key: give one key, not several")
    key = lines[0].strip()
    if _KEY.fullmatch(key) is None:
        raise PreconditionError(
            400, "Malformed Idempotency-Key", "Idempotency-Key must be 1-255 visible ASCII characters"
        )
    return key
