"""Forwarding events to a broker: a :class:`Forwarder` (a projection with a checkpoint) and a :class:`Sink`.

``epoch.forwarding.nats.JetStreamSink`` publishes to NATS JetStream (extra ``nats``). See
``docs/forwarding.md``.
"""

from __future__ import annotations

from epoch.forwarding.forwarder import Forwarder, Message, Sink, Unpublishable

__all__ = ["Forwarder", "Message", "Sink", "Unpublishable"]
