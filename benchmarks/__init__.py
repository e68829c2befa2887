"""The benchmark suite behind ``epoch bench`` (issue 5): epoch against ``eventsourcing`` and the raw drivers.

Every workload runs three ways in one process run, interleaved round by round: epoch, the
``eventsourcing`` library doing the same work as its users run it, and the raw driver writing and
reading the same rows. See BENCHMARKS.md for the method and the latest numbers.
"""

from benchmarks.harness import IMPLS, Result, Sizes, machine_info, ratio
from benchmarks.suite import WORKLOADS, run

__all__ = ["IMPLS", "WORKLOADS", "Result", "Sizes", "machine_info", "ratio", "run"]
