"""What tokens cost: a built-in table of OpenAI's list prices, and PRICES_FILE to change or add
models. A model with no price has its tokens counted and its cost reported as unknown."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.governance.files import (
    SettingsFileError,
    amount,
    entry,
    read_settings_file,
    unknown_fields,
)

# When the built-in prices were taken from OpenAI's pricing page (https://openai.com/api/pricing);
# the README says so too. They change: PRICES_FILE sets today's.
PRICES_CHECKED = "2026-11"
PER_TOKENS = 1_000_000  # prices are in USD per this many tokens
# A dated snapshot (`gpt-4o-2024-08-06`) costs what its model does.
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens: input, cached input (read from the prompt cache) and output."""

    input: float
    cached_input: float
    output: float


BUILT_IN: dict[str, Price] = {
    "gpt-5.1": Price(1.25, 0.125, 10.00),
    "gpt-5": Price(1.25, 0.125, 10.00),
    "gpt-5-mini": Price(0.25, 0.025, 2.00),
    "gpt-5-nano": Price(0.05, 0.005, 0.40),
    "gpt-4.1": Price(2.00, 0.50, 8.00),
    "gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.025, 0.40),
    "gpt-4o": Price(2.50, 1.25, 10.00),
    "gpt-4o-mini": Price(0.15, 0.075, 0.60),
    "o3": Price(2.00, 0.50, 8.00),
    "o3-mini": Price(1.10, 0.55, 4.40),
    "o4-mini": Price(1.10, 0.275, 4.40),
    "o1": Price(15.00, 7.50, 60.00),
    "gpt-4-turbo": Price(10.00, 10.00, 30.00),
    "gpt-3.5-turbo": Price(0.50, 0.50, 1.50),
}


class Prices:
    def __init__(self, table: Mapping[str, Price] | None = None) -> None:
        self.table = {name.lower(): price for name, price in (table or BUILT_IN).items()}

    def price_of(self, model: str) -> Price | None:
        name = model.strip().lower()
        return self.table.get(name) or self.table.get(_SNAPSHOT.sub("", name))

    def cost(
        self, model: str, input_tokens: int, cached_input_tokens: int, output_tokens: int
    ) -> float | None:
        """USD, or None when the model has no price."""
        price = self.price_of(model)
        if price is None:
            return None
        cached = min(cached_input_tokens, input_tokens)
        return (
            (input_tokens - cached) * price.input
            + cached * price.cached_input
            + output_tokens * price.output
        ) / PER_TOKENS


def load_prices(path: Path | None) -> Prices:
    """The built-in prices, changed and added to by PRICES_FILE; SettingsFileError when the file
    is wrong.

    The file (YAML, or TOML when it ends in .toml) holds `models`, a mapping of model name to
    `input`, `output` and optionally `cached_input` (default: `input`), in USD per 1M tokens.
    """
    if path is None:
        return Prices()
    where = f"PRICES_FILE {path}"
    data = read_settings_file("PRICES_FILE", path)
    unknown_fields(where, data, "", ("models",))
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise SettingsFileError(f"{where}: models must be a mapping of model name to prices.")
    table = dict(BUILT_IN)
    for name, raw in models.items():
        at = f"models.{name}"
        fields = entry(where, raw, at)
        unknown_fields(where, fields, at, ("input", "cached_input", "output"))
        input_price = amount(where, fields, at, "input")
        output_price = amount(where, fields, at, "output")
        for field, value in (("input", input_price), ("output", output_price)):
            if value is None:
                raise SettingsFileError(f"{where}: {at}.{field} is missing (USD per 1M tokens).")
        assert input_price is not None and output_price is not None
        cached = amount(where, fields, at, "cached_input")
        table[str(name)] = Price(
            input_price, input_price if cached is None else cached, output_price
        )
    return Prices(table)
