"""``epoch forget SUBJECT``: erase a subject's personal-data keys (crypto-shredding, docs/personal-data.md)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from epoch import KeyStore
from epoch.cli._options import JsonOption, StoreOption
from epoch.cli._stores import cli_store
from epoch.errors import InvalidEvent


async def _forget(url: str | None, subject: str) -> dict[str, Any]:
    async with cli_store(url) as store:
        try:
            erased = await KeyStore.for_store(store).forget(subject)
        except InvalidEvent as exc:  # a subject id no event could have: say so, nothing was written
            raise typer.BadParameter(exc.reason) from None
    return {"subject": subject, "keys_erased": erased}


def register(app: typer.Typer) -> None:
    @app.command()
    def forget(
        subject: Annotated[str, typer.Argument(help="The subject id (the value of the events' subject field).")],
        store: StoreOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Erase every key of SUBJECT: its personal fields read as redacted from now on, in every process
        within a second. Backups made before still hold the keys."""
        report = asyncio.run(_forget(store, subject))
        if as_json:
            typer.echo(json.dumps(report))
        elif report["keys_erased"]:
            typer.echo(f"forgot subject {subject!r}: {report['keys_erased']} key(s) erased")
        else:
            typer.echo(f"subject {subject!r} had no key: nothing to erase (nothing of it is readable)")
