"""``epoch.web.api``: the name DESIGN §8 gives the HTTP helpers; they live in :mod:`epoch.http`."""

from __future__ import annotations

from epoch.http import *  # noqa: F403
from epoch.http import __all__ as __all__
