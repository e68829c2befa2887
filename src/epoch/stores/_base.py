"""What every store class shares: ``async with store:`` opens it when it needs opening and closes it."""

from __future__ import annotations

from abc import abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["StoreLifecycle"]


class StoreLifecycle:
    """``__aenter__`` awaits :meth:`_enter` (nothing, unless a store overrides it) and returns the store;
    ``__aexit__`` awaits :meth:`close`."""

    __slots__ = ()

    @abstractmethod
    async def close(self) -> None: ...

    async def _enter(self) -> None:
        """Make the store ready for use at ``async with``."""

    async def __aenter__(self) -> Self:
        await self._enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
