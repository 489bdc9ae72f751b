"""One shortener for every one-line text: titles, prompts, descriptions in lists."""

from __future__ import annotations

from bot.text import shorten


def test_a_short_text_comes_back_on_one_line() -> None:
    assert shorten("  Customer\n  support   bot ", 60) == "Customer support bot"


def test_a_long_text_is_cut_after_its_last_whole_word() -> None:
    text = "How do I rotate the API keys of our staging environment safely?"
    assert shorten(text, 60) == "How do I rotate the API keys of our staging environment…"
    assert len(shorten(text, 20)) <= 20


def test_a_word_ending_exactly_at_the_limit_is_kept() -> None:
    assert shorten("alpha beta gamma", 11) == "alpha beta…"


def test_a_text_without_breaks_is_cut_inside_its_word() -> None:
    assert shorten("x" * 100, 10) == "x" * 9 + "…"
    assert shorten("a " + "y" * 100, 10) == "a " + "y" * 7 + "…"


def test_every_shortened_text_fits_its_limit() -> None:
    text = "lorem ipsum dolor sit amet, consectetur adipiscing elit " * 5
    for limit in range(2, 120):
        assert len(shorten(text, limit)) <= limit
