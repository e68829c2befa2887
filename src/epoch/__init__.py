"""epoch: event sourcing and CQRS for Python."""
