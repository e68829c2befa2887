"""The multi-host test network of the partition tests; it lives in benchmarks/netns.py, which the
``scaling`` benchmark shares (the benchmark package does not import tests/)."""

from benchmarks.netns import Network, required, sweep, unavailable, wait_for

__all__ = ["Network", "required", "sweep", "unavailable", "wait_for"]
