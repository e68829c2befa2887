"""``JetStreamSink``: publishes events to NATS JetStream (extra ``nats``: ``pip install '.[nats]'``).

Each event is one message: the stored data bytes as the payload, ``Nats-Msg-Id`` set to the event id
(so JetStream drops a message it already stored within the stream's duplicate window), and headers
carrying where the event is in the store. The subject comes from a template over the event's
``category``, ``type`` and ``stream``.
"""

from __future__ import annotations

import re
from types import TracebackType
from typing import TYPE_CHECKING, Any

import msgspec

from epoch.errors import ConfigurationError, MissingDependency
from epoch.forwarding.forwarder import Message, Unpublishable

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

__all__ = ["JetStreamSink", "header_size", "subject_token"]

_MESSAGE_TOO_LARGE = 10054
"""JetStream's ``err_code`` for a message above the stream's ``max_msg_size`` (JSStreamMessageExceedsMaximumErr,
400 "message size exceeds maximum allowed"): the server answers every attempt so, so it is not retried."""

# A subject token may not hold whitespace, the token separator or the wildcards.
_NOT_IN_TOKEN = re.compile(r"[\s.*>]")


def subject_token(name: str) -> str:
    """``name`` as one NATS subject token: whitespace, ``.``, ``*`` and ``>`` become ``_``, and an empty
    name (the category of ``-x``: NATS refuses an empty token) is ``_``.

    Not one to one: ``a.b`` and ``a_b`` share ``a_b``, the empty category and ``_`` share ``_``. The
    headers carry the names as they are.
    """
    return _NOT_IN_TOKEN.sub("_", name) or "_"


def headers_of(message: Message) -> dict[str, str]:
    """The headers published with an event; ``Nats-Msg-Id`` is what JetStream deduplicates on."""
    headers = {
        "Nats-Msg-Id": str(message.id),
        "Epoch-Stream": message.stream,
        "Epoch-Version": str(message.version),
        "Epoch-Position": str(message.position),
        "Epoch-Type": message.type,
        "Epoch-Recorded-At": message.recorded_at.isoformat(),
    }
    if message.metadata:
        headers["Epoch-Metadata"] = msgspec.json.encode(message.metadata).decode()
    return headers


def header_size(headers: dict[str, str]) -> int:
    """The bytes ``headers`` take in a NATS message, as nats-py writes them: ``NATS/1.0``, a ``key: value``
    line each (the value trimmed), a blank line; each line ends in CRLF."""
    lines = sum(len(key.encode()) + len(value.strip().encode()) + 4 for key, value in headers.items())
    return len(b"NATS/1.0\r\n\r\n") + lines


class JetStreamSink:
    """A :class:`~epoch.forwarding.Sink` publishing to NATS JetStream at ``url``.

    ``subject`` is a template: ``{category}``, ``{type}`` and ``{stream}`` are replaced by the event's,
    each made a single subject token by :func:`subject_token`. Every publish waits for JetStream's
    acknowledgement (``timeout`` seconds); the connection reconnects on its own after a broker restart
    (the forwarder retries meanwhile). The JetStream stream must exist and cover the subjects:
    :meth:`ensure_stream` creates one. Use ``async with JetStreamSink(...) as sink:``.
    """

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        subject: str = "epoch.{category}.{type}",
        timeout: float = 5.0,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        try:
            subject.format(category="c", type="t", stream="s")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigurationError(
                f"subject template {subject!r} may use only {{category}}, {{type}} and {{stream}}"
            ) from exc
        self.url = url
        self.subject = subject
        self.timeout = timeout
        self.connect_options = connect_options or {}
        self.published = 0
        self.duplicates = 0
        self._client: Client | None = None
        self._js: JetStreamContext | None = None

    def subject_of(self, message: Message) -> str:
        """The subject ``message`` is published on."""
        return self.subject.format(
            category=subject_token(message.category),
            type=subject_token(message.type),
            stream=subject_token(message.stream),
        )

    async def connect(self) -> None:
        """Connect to the server (done by ``async with``); reconnects forever after that."""
        try:
            import nats
        except ImportError as exc:
            raise MissingDependency("nats-py", "nats") from exc
        options: dict[str, Any] = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.5}
        options.update(self.connect_options)
        self._client = await nats.connect(self.url, **options)
        self._js = self._client.jetstream(timeout=self.timeout)

    async def ensure_stream(self, name: str, subjects: list[str], duplicate_window: float = 120.0) -> None:
        """Create the JetStream stream ``name`` on ``subjects`` (file storage) unless it exists.

        ``duplicate_window`` (seconds) is how long JetStream remembers message ids: a forwarder that is
        down for longer than that may store an event twice when it restarts.
        """
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        js = self._context()
        try:
            await js.stream_info(name)
        except NotFoundError:
            config = StreamConfig(
                name=name, subjects=subjects, storage=StorageType.FILE, duplicate_window=duplicate_window
            )
            await js.add_stream(config)

    @property
    def max_payload(self) -> int:
        """The largest message the server takes, headers included (its ``max_payload``: 1 MiB by default)."""
        if self._client is None:
            raise ConfigurationError("JetStreamSink is not connected: use `async with JetStreamSink(...)`")
        return int(self._client.max_payload)

    async def publish(self, message: Message) -> None:
        """Publish one event and wait for JetStream's acknowledgement.

        A message larger than the server's ``max_payload`` (data and headers) raises :class:`Unpublishable`
        before anything is sent: the server would drop the connection on every attempt. One larger than the
        JetStream stream's own ``max_msg_size`` raises it when JetStream refuses it (err_code 10054): it
        would refuse every attempt. Other refusals (no stream on the subject yet, a timeout) raise as they
        are, for the forwarder to retry.
        """
        from nats.js.errors import APIError

        js = self._context()
        headers = headers_of(message)
        size, limit = header_size(headers), self.max_payload
        if size + len(message.data) > limit:
            raise Unpublishable(
                message.stream,
                message.version,
                message.position,
                f"the NATS message would be {size + len(message.data)} bytes ({len(message.data)} of data and "
                f"{size} of headers, the metadata among them), more than the server's max_payload of {limit}: "
                "raise max_payload in the server's configuration, or keep events smaller",
            )
        subject = self.subject_of(message)
        try:
            ack = await js.publish(subject, message.data, timeout=self.timeout, headers=headers)
        except APIError as exc:
            if exc.err_code != _MESSAGE_TOO_LARGE:
                raise
            stream_limit = await self._max_msg_size(subject)
            raise Unpublishable(
                message.stream,
                message.version,
                message.position,
                f"the NATS message is {size + len(message.data)} bytes ({len(message.data)} of data and {size} "
                f"of headers, the metadata among them), more than {stream_limit} (the server refused it: "
                f"{exc.description}, err_code {exc.err_code}): raise the stream's max_msg_size, or keep events "
                "smaller",
            ) from exc
        self.published += 1
        if ack.duplicate:
            self.duplicates += 1

    async def _max_msg_size(self, subject: str) -> str:
        """What refused a message on ``subject``: the max_msg_size of the JetStream stream that takes it, as
        the server tells (two more requests, made only after such a refusal)."""
        from nats.errors import Error

        js = self._context()
        try:
            name = await js.find_stream_name_by_subject(subject)
            config = (await js.stream_info(name)).config
        except (Error, TimeoutError):  # the refusal stands without its number
            return f"the max_msg_size of the JetStream stream on {subject!r}"
        return f"the max_msg_size of {config.max_msg_size} of the JetStream stream {name!r}"

    def _context(self) -> JetStreamContext:
        if self._js is None:
            raise ConfigurationError("JetStreamSink is not connected: use `async with JetStreamSink(...)`")
        return self._js

    async def close(self) -> None:
        """Drain and close the connection."""
        client, self._client, self._js = self._client, None, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> JetStreamSink:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
