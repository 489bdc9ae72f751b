"""Laying an answer's Markdown out as Slack messages: splits, fences, footnotes, a growing draft."""

from __future__ import annotations

from bot.engine.base import Citation
from bot.slack.layout import (
    Draft,
    Layout,
    complete_words,
    defuse_mentions,
    open_fence,
    split_markdown,
    with_footnotes,
)


def test_short_markdown_stays_whole() -> None:
    assert split_markdown("# Title\n\nbody") == ["# Title\n\nbody"]


def test_long_markdown_splits_between_paragraphs_and_keeps_every_word() -> None:
    text = "\n\n".join(f"paragraph {n} " + "x" * 90 for n in range(50))
    pieces = split_markdown(text, limit=1000)
    assert all(len(p) <= 1000 for p in pieces)
    assert "\n\n".join(pieces) == text
    assert all(p.startswith("paragraph") for p in pieces)


def test_a_code_block_cut_in_two_is_closed_and_reopened() -> None:
    code = "\n".join(f"print({n})" for n in range(300))
    text = f"Here:\n\n```python\n{code}\n```\n\nDone."
    pieces = split_markdown(text, limit=1000)
    assert len(pieces) > 1
    for piece in pieces:
        assert len(piece) <= 1000
        assert piece.count("```") % 2 == 0, "every piece renders its code as code"
    assert pieces[1].startswith("```python\n")
    lines = [line for p in pieces for line in p.splitlines() if line.startswith("print(")]
    assert lines == [f"print({n})" for n in range(300)]


def test_text_without_spaces_is_cut_hard_and_kept_whole() -> None:
    text = "a" * 2500
    pieces = split_markdown(text, limit=1000)
    assert "".join(pieces) == text and all(len(p) <= 1000 for p in pieces)


def test_footnotes_number_files_in_order_of_first_citation_and_list_the_sources() -> None:
    text = "Alpha. Beta. Gamma."
    citations = [
        Citation(text.index(" Beta"), "f2", "b.pdf"),
        Citation(text.index(" Gamma"), "f1", "a.pdf"),
        Citation(len(text), "f2", "b.pdf"),
        Citation(len(text), "f2", "b.pdf"),
    ]
    assert with_footnotes(text, citations) == (
        "Alpha.[1] Beta.[2] Gamma.[1]\n\n**Sources:**\n[1] b.pdf\n[2] a.pdf"
    )
    assert with_footnotes(text, []) == text


def test_an_answer_laid_out_as_it_streams_only_ever_grows_at_the_end() -> None:
    """What was streamed into a message stays a prefix of it, whatever the deltas' sizes."""
    code = "\n".join(f"    step({n})" for n in range(120))
    text = "\n\n".join(["intro " * 80, f"```python\n{code}\n```", "outro " * 150])
    for size in (1, 7, 64, 900):
        layout = Layout(limit=1000)
        seen: list[str] = []
        shown = 0
        for end in range(size, len(text) + size, size):
            # Like the streaming renderer: whole words are laid out, the rest waits for more.
            arrived = text[shown:end]
            take = len(arrived) if end >= len(text) else complete_words(arrived)
            layout.add(arrived[:take])
            shown += take
            for index, before in enumerate(seen):
                assert layout.messages[index].startswith(before)
            seen = list(layout.messages)
        assert all(len(m) <= 1000 for m in layout.messages)
        assert all(m.count("```") % 2 == 0 for m in layout.messages[:-1])
        shown = " ".join(layout.messages).replace("```python", "").replace("```", "")
        assert shown.split() == text.replace("```python", "").replace("```", "").split()


def test_an_open_code_fence_is_found_by_its_opening_line() -> None:
    assert open_fence("text\n```python\nprint(1)") == "```python"
    assert open_fence("```\ncode\n```\nafter") == ""
    assert open_fence("no code") == ""


def test_a_streamed_message_never_ends_in_half_a_word() -> None:
    assert complete_words("Hello wor") == len("Hello")
    assert complete_words("Hello world ") == len("Hello world")
    assert complete_words("x" * 50) == 50, "a long run without spaces is shown anyway"


def test_text_after_a_tool_round_starts_a_new_paragraph() -> None:
    draft = Draft()
    draft.add("Let me look.")
    draft.new_round()
    draft.add("It is sunny.")
    assert draft.received == "Let me look.\n\nIt is sunny."


def test_a_draft_lays_out_whole_words_until_it_is_final() -> None:
    draft = Draft()
    draft.add("The answer is forty")
    assert draft.lay_out(final=False) == "The answer is"
    assert draft.messages == ["The answer is"]
    assert draft.has_news()
    draft.add("-two. ")
    draft.lay_out(final=True)
    assert draft.messages == ["The answer is forty-two."]
    assert not draft.has_news()


def test_a_final_text_that_continues_the_draft_keeps_its_layout() -> None:
    draft = Draft()
    draft.add("Refunds take 30 days.")
    draft.lay_out(final=False)
    assert not draft.complete("Refunds take 30 days.[1]\n\n**Sources:**\n[1] terms.md")
    draft.lay_out(final=True)
    assert draft.messages == ["Refunds take 30 days.[1]\n\n**Sources:**\n[1] terms.md"]


def test_a_final_text_that_differs_from_the_draft_is_laid_out_anew() -> None:
    draft = Draft()
    draft.add("See chart.png")
    draft.lay_out(final=False)
    assert draft.complete("Here is the chart.")
    draft.lay_out(final=True)
    assert draft.messages == ["Here is the chart."]


def test_a_failure_follows_what_arrived_or_stands_alone() -> None:
    draft = Draft()
    draft.end_with(":warning: failed")
    assert draft.received == ":warning: failed"
    draft = Draft()
    draft.add("Half an answer ")
    draft.end_with("_Stopped._")
    assert draft.received == "Half an answer\n\n_Stopped._"


def test_an_answer_cannot_ping_a_channel_or_a_group_but_still_reads_the_same() -> None:
    joiner = "\u2060"
    text = (
        "<!here> and <!channel|channel>, <!everyone>, <!subteam^S0TEAM|@oncall>, <!subteam^S1>; "
        "also @here, @channel and @everyone. Ask <@U0ALICE> in <#C0GENERAL>, mail a@here.com."
    )
    assert defuse_mentions(text) == (
        f"@{joiner}here and @{joiner}channel, @{joiner}everyone, @{joiner}oncall, @{joiner}group; "
        f"also @{joiner}here, @{joiner}channel and @{joiner}everyone. "
        "Ask <@U0ALICE> in <#C0GENERAL>, mail a@here.com."
    )


def test_a_mention_streamed_in_pieces_is_shown_once_whole_and_defused() -> None:
    draft = Draft()
    for piece in ("Heads up ", "<!subteam^S0TEAM|@on", " call team> now", " please"):
        draft.add(piece)
        draft.lay_out(final=False)
        assert "<!" not in draft.messages[0]
    draft.lay_out(final=True)
    assert draft.messages == ["Heads up @\u2060on call team now please"]
