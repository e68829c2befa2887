"""Examples shipped with epoch: ``epoch.examples.users`` is the Users context behind the README and ``epoch demo``."""
