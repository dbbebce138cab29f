"""`restock data ...`: build scenarios from retail data files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from restock.cli.common import app, console, fail

data_app = typer.Typer(help="Build scenarios from retail data (the M5 file layout).", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("import-m5")
def import_m5(
    sales: Annotated[
        Path, typer.Argument(help="sales_train_validation.csv (wide: d_1..d_n per item and store).")
    ],
    calendar: Annotated[Path, typer.Argument(help="calendar.csv (date, wm_yr_wk, d).")],
    prices: Annotated[
        Path | None,
        typer.Argument(help="sell_prices.csv (store_id, item_id, wm_yr_wk, sell_price); optional."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Scenario YAML to write (the demand CSV goes beside it).")
    ] = Path("scenario.yaml"),
    stores: Annotated[
        str | None, typer.Option(help="Comma-separated store_id values (default: all).")
    ] = None,
    items: Annotated[str | None, typer.Option(help="Comma-separated item_id values (default: all).")] = None,
    start: Annotated[
        str | None, typer.Option(help="First day (ISO date, default: the first in the file).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Last day (ISO date, included; default: the last).")] = None,
    horizon: Annotated[int | None, typer.Option(help="Episode length in days (default 28).", min=1)] = None,
) -> None:
    """Turn M5-format files into a replay scenario: daily units per store and item become the demand,
    sell prices the SKU prices (costs derived from them); see `restock.envs.m5`."""
    from restock.envs.config import ConfigError
    from restock.envs.m5 import import_m5 as run

    for p in (sales, calendar, prices):
        if p is not None and not p.is_file():
            fail(f"{p}: no such file")
    try:
        scen, demand = run(
            sales, calendar, prices, out, stores=stores, items=items, start=start, end=end, horizon=horizon
        )
    except (ValueError, ConfigError) as exc:
        fail(str(exc))
    console.print(f"scenario: {scen}\ndemand:   {demand}", highlight=False)
    console.print(f"check it: restock scenarios --check {scen}", highlight=False)
