"""``epoch serve``: a read-only web explorer over a store (needs the ``web`` extra: ``pip install '.[web]'``).

:func:`create_app` returns a Starlette (ASGI) app; see ``docs/web.md``.
"""

from __future__ import annotations

from epoch.errors import MissingDependency

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the packages
    raise MissingDependency(exc.name or "starlette", "web") from exc

from epoch.web.app import create_app

__all__ = ["create_app"]
