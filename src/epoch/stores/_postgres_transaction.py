"""A :class:`~epoch.stores._sql.Transaction` over a psycopg connection inside a transaction."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

__all__ = ["PostgresTransaction"]


@lru_cache(maxsize=256)
def _to_pyformat(sql: str) -> str:
    # psycopg uses %s; keep literal % intact. A '?' inside a string literal would be misread, so pass
    # values as parameters (the jsonb '?' operator has the spelling jsonb_exists()).
    return re.sub(r"\?", "%s", sql.replace("%", "%%"))


class PostgresTransaction:
    """``?``-style SQL on a psycopg ``AsyncConnection`` that is inside a transaction."""

    dialect: Literal["postgresql"] = "postgresql"

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        """The psycopg ``AsyncConnection``, for anything ``execute`` cannot say (e.g. COPY)."""

    async def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        cursor = await self.connection.execute(_to_pyformat(sql), tuple(params))
        if cursor.description is None:
            return []
        return list(await cursor.fetchall())
