"""Options shared by the subcommands."""

from __future__ import annotations

from typing import Annotated

import typer

StoreOption = Annotated[
    str | None,
    typer.Option("--store", "-s", help="Store URL (default: $EPOCH_STORE or sqlite:///epoch.db).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of plain text.")]
