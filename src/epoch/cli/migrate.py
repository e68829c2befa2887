"""``epoch migrate``: create or upgrade a store's schema (PostgreSQL; the other stores manage their own)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import typer

from epoch.cli._options import JsonOption, StoreOption
from epoch.cli._stores import check_store, cli_store, resolve


async def _migrate(url: str) -> dict[str, Any]:
    scheme = url.partition("://")[0].lower().split("+", 1)[0]
    if scheme in ("postgresql", "postgres"):
        from epoch.stores.postgres import migrate

        await check_store(url, create=True)  # a server that is down: one line within seconds
        before, after, applied = await migrate(url)
        return {
            "store": "postgresql",
            "version_before": before,
            "version": after,
            "applied": [{"version": v, "description": d} for v, d in applied],
        }
    async with cli_store(url, create=True):  # opening creates the schema
        pass
    return {"store": scheme, "version_before": None, "version": None, "applied": []}


def register(app: typer.Typer) -> None:
    @app.command()
    def migrate(store: StoreOption = None, as_json: JsonOption = False) -> None:
        """Create or upgrade the store's schema. Idempotent: running it again does nothing."""
        report = asyncio.run(_migrate(resolve(store)))
        if as_json:
            typer.echo(json.dumps(report))
        elif report["store"] != "postgresql":
            typer.echo(f"{report['store']}: the store creates and upgrades its schema itself; nothing to do")
        elif report["applied"]:
            for step in report["applied"]:
                typer.echo(f"applied migration {step['version']}: {step['description']}")
            typer.echo(f"schema at version {report['version']}")
        else:
            typer.echo(f"schema already at version {report['version']}; nothing to do")
