"""``EventStoreContract``: the behaviour every event store must show, as a reusable pytest suite.

Subclass it in a test module and provide a ``store`` fixture that yields an open, *empty* store::

    class TestMyStore(EventStoreContract):
        @pytest.fixture
        async def store(self):
            async with MyStore(...) as store:
                yield store

epoch runs this same suite on its memory, SQLite and PostgreSQL stores (DESIGN §3).
The tests need pytest-asyncio with ``asyncio_mode = "auto"`` (its default strict mode refuses the async ``store`` fixture).
"""

from __future__ import annotations

from typing import ClassVar

import pytest

from epoch.testing.contract_appends import AppendContract
from epoch.testing.contract_dcb import TagsAndQueriesContract
from epoch.testing.contract_dcb_appends import ConditionsContract
from epoch.testing.contract_dcb_large import LargeQueriesContract
from epoch.testing.contract_erasure import ErasureContract
from epoch.testing.contract_ids import DuplicateIdContract
from epoch.testing.contract_input import InputContract
from epoch.testing.contract_lifecycle import LifecycleContract
from epoch.testing.contract_limits import LimitsContract
from epoch.testing.contract_log import LogContract
from epoch.testing.contract_numbers import NumbersContract
from epoch.testing.contract_personal import PersonalDataContract
from epoch.testing.contract_roundtrip import RoundTripContract

__all__ = ["EventStoreContract"]


class EventStoreContract(
    AppendContract,
    LogContract,
    DuplicateIdContract,
    RoundTripContract,
    InputContract,
    NumbersContract,
    LifecycleContract,
    TagsAndQueriesContract,
    ConditionsContract,
    LargeQueriesContract,
    ErasureContract,
    LimitsContract,
    PersonalDataContract,
):
    """The guarantees of DESIGN §3 every store shows, against the ``store`` fixture; one module each:

    - ``contract_appends``: atomic appends, the expected version, racing appends, dense versions (1-3);
    - ``contract_log``: ``read_all`` order and categories, per-stream order, one delivery per event (4, 10, 11);
    - ``contract_ids``: the same ids at the same place, ``get_event``, ids stored twice (5);
    - ``contract_roundtrip``: bytes, names and ``recorded_at`` round-trip exactly (6);
    - ``contract_input``: bad input is refused with a clear error (8);
    - ``contract_numbers``: out-of-range numbers are bad input (13);
    - ``contract_lifecycle``: soft delete, subscriptions and closing (3, 4 and 9's live half);
    - ``contract_dcb``: tags and ``read_query`` (dynamic consistency boundaries, DESIGN §8), and which of
      the boundary operations the store declares (``boundary_operations``);
    - ``contract_dcb_appends``: ``append_with_condition``, ``append_many``, racing claimants of one tag.
    - ``contract_dcb_large``: queries of over 500 items, items of 600 types or 1,500 tags, read and checked;
    - ``contract_erasure``: hard delete (tombstones) and ``truncate_before`` (DESIGN §8);
    - ``contract_limits``: ``set_stream_limits`` and ``scavenge`` (DESIGN §8).
    - ``contract_personal``: personal data sealed, forgotten, copied (§8, on stores with ``SupportsKeys``).
    """

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]
