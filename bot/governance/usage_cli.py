"""`python -m bot usage [--since 30d] [--by channel|user|assistant|model] [--csv]`: what the
assistants were used for, from the database alone (DATABASE_URL, and PRICES_FILE if set)."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from typing import Any, TextIO

from bot.config import UsageSettings
from bot.governance.prices import PRICES_CHECKED, Prices
from bot.governance.usage import UsageTotal, by_key, parse_span, total

# Light to import (`python -m bot` imports this module to read its arguments): the store, and
# SQLAlchemy with it, is imported when the command runs.

GROUPS = ("channel", "user", "assistant", "model")
COLUMNS = ("turns", "input_tokens", "cached_input_tokens", "output_tokens", "cost_usd")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "usage", help="tokens and cost per channel, person, assistant or model", description=__doc__
    )
    parser.add_argument(
        "--since", default="30d", metavar="SPAN", help="how far back: 30d, 12h, 2w (default 30d)"
    )
    parser.add_argument("--by", choices=GROUPS, default="channel", help="default: channel")
    parser.add_argument("--csv", action="store_true", help="CSV instead of a table")


async def run(args: argparse.Namespace, settings: UsageSettings, out: TextIO = sys.stdout) -> int:
    from bot.store import Store, StoreError, sqlite_file  # when it runs: it loads SQLAlchemy

    try:
        span = parse_span(args.since)
    except ValueError as exc:
        print(f"usage: --since {exc}.", file=sys.stderr)
        return 2
    path = sqlite_file(settings.database_url)
    if path is not None and not path.is_file():
        print(f"usage: FAILED there is no database at {path}: set DATABASE_URL.", file=sys.stderr)
        return 1
    try:
        store = await Store.open(settings.database_url)
    except StoreError as exc:
        print(f"usage: FAILED {exc}", file=sys.stderr)
        return 1
    prices = settings.prices or Prices()
    try:
        rows = await store.usage(time.time() - span, args.by)
        names = (
            {d.id: d.name for d in await store.list_definitions()} if args.by == "assistant" else {}
        )
    finally:
        await store.close()
    entries = by_key(rows, prices)
    if args.csv:
        write_csv(out, args.by, entries, names)
    else:
        write_table(out, args, entries, total(rows, prices), names)
    return 0


def _name(key: str, names: dict[str, str]) -> str:
    if not key:
        return "(not recorded)"
    return f"{names[key]} ({key})" if key in names else key


def _cost(figures: UsageTotal) -> str:
    if figures.unpriced_tokens and not figures.usd:
        return "unknown"
    return f"{figures.usd:.4f}" + (" + unknown" if figures.unpriced_tokens else "")


def _cells(figures: UsageTotal) -> list[str]:
    return [
        str(figures.turns),
        str(figures.input_tokens),
        str(figures.cached_input_tokens),
        str(figures.output_tokens),
        _cost(figures),
    ]


def write_csv(
    out: TextIO, by: str, entries: list[tuple[str, UsageTotal]], names: dict[str, str]
) -> None:
    """One row per entry; `cost_usd` is empty when no price is known for any of its tokens, and
    `unpriced_tokens` counts the tokens of models without a price."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([by, *COLUMNS, "unpriced_tokens"])
    for key, figures in entries:
        priced = not figures.unpriced_tokens or figures.usd
        writer.writerow(
            [
                _name(key, names) if by == "assistant" else key,
                figures.turns,
                figures.input_tokens,
                figures.cached_input_tokens,
                figures.output_tokens,
                f"{figures.usd:.10f}" if priced else "",
                figures.unpriced_tokens,
            ]
        )


def write_table(
    out: TextIO,
    args: argparse.Namespace,
    entries: list[tuple[str, UsageTotal]],
    summed: UsageTotal,
    names: dict[str, str],
) -> None:
    rows = [[_name(key, names), *_cells(figures)] for key, figures in entries]
    rows.append(["total", *_cells(summed)])
    header = [args.by, *COLUMNS]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print(
        f"Usage over the last {args.since}, by {args.by}; cost in USD at OpenAI's list prices "
        f"of {PRICES_CHECKED} (PRICES_FILE changes them)",
        file=out,
    )
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells).rstrip(), file=out)
    if summed.unpriced_models:
        models = ", ".join(sorted(summed.unpriced_models))
        print(f"No price is known for {models}: their tokens are counted, not costed.", file=out)
