"""Test kit: decider specifications and (soon) the store contract suite that every backend subclasses."""

from epoch.testing.spec import DeciderSpec

# EventStoreContract: the lead adds its import and its __all__ entry here.

__all__ = ["DeciderSpec"]
