"""Which assistant answers where, and why: the one place that decides it.

A thread runs the assistant it holds (set when it started, or switched since). A new conversation
gets its channel's (or DM's) default if one is set, else the bot's global default. The slash
command, the home tab and every turn ask this module, so they never disagree.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bot.definitions import AssistantDefinition
from bot.engine.base import AssistantCatalog
from bot.messages import ConversationKey
from bot.store import ChannelSetting, ConversationRecord, Store

Reason = Literal["thread", "channel", "global"]


@dataclass(frozen=True)
class Choice:
    assistant_id: str
    reason: Reason  # thread: the thread's own; channel: the channel's or DM's default
    set_by: str = ""  # who set the channel default (empty for the others)


@dataclass(frozen=True)
class Match:
    """What a name someone typed refers to: one assistant, several, or none (with near misses)."""

    found: AssistantDefinition | None = None
    ambiguous: tuple[AssistantDefinition, ...] = ()
    close: tuple[AssistantDefinition, ...] = ()


def match_assistant(query: str, assistants: Sequence[AssistantDefinition]) -> Match:
    """By id, whole name or unique name prefix, ignoring case."""
    wanted = " ".join(query.split()).casefold()
    if not wanted:
        return Match()
    for assistant in assistants:
        if assistant.id.casefold() == wanted:
            return Match(found=assistant)
    for candidates in (
        [a for a in assistants if a.name.casefold() == wanted],
        [a for a in assistants if a.name.casefold().startswith(wanted)],
    ):
        if len(candidates) == 1:
            return Match(found=candidates[0])
        if candidates:
            return Match(ambiguous=tuple(candidates))
    names = {a.name.casefold(): a for a in assistants}
    near = difflib.get_close_matches(wanted, list(names), n=5, cutoff=0.5)
    near += [name for name in names if wanted in name and name not in near]
    return Match(close=tuple(names[name] for name in near[:5]))


class NotAllowed(Exception):
    """This person may not change this default; the message says who may."""


class AssistantChooser:
    def __init__(
        self,
        store: Store,
        catalog: AssistantCatalog,
        engine_name: str,
        global_default_id: str,
        admins: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.engine_name = engine_name  # a thread's choice counts only on the engine it was made on
        self.global_default_id = global_default_id
        self.admins = admins  # empty: everyone may change a channel's default

    async def for_new_conversation(self, team_id: str, channel_id: str) -> Choice:
        setting = await self.store.get_channel_setting(team_id, channel_id)
        if setting is not None:
            return Choice(setting.assistant_id, "channel", setting.set_by)
        return Choice(self.global_default_id, "global")

    async def for_thread(self, key: ConversationKey) -> Choice:
        """The thread's own assistant (also one chosen before the bot took part in it), else
        what a new conversation here gets."""
        return await self.for_conversation(key, await self.store.get_conversation(key))

    async def for_conversation(
        self, key: ConversationKey, record: ConversationRecord | None
    ) -> Choice:
        """As `for_thread`, for a thread whose conversation (None: it has none) was just read."""
        if record is not None and record.engine == self.engine_name:
            return Choice(record.assistant_id, "thread")
        return await self.for_new_conversation(key.team_id, key.channel_id)

    async def assistants(self) -> list[AssistantDefinition]:
        """Every assistant, by name (the backend lists newest first; people look for names)."""
        return sorted(await self.catalog.list_assistants(), key=lambda a: (a.name.casefold(), a.id))

    async def assistant(self, assistant_id: str) -> AssistantDefinition | None:
        """One assistant by id (the bot's own definitions also by name), None if unknown."""
        return await self.catalog.get_assistant(assistant_id)

    def may_set_default(self, user_id: str, is_direct: bool) -> bool:
        """A DM's default is its person's; a channel's is everyone's, or only the admins'."""
        return is_direct or not self.admins or user_id in self.admins

    async def set_default(
        self, team_id: str, channel_id: str, assistant_id: str, user_id: str, is_direct: bool
    ) -> None:
        if not self.may_set_default(user_id, is_direct):
            raise NotAllowed("only the bot's admins may change a channel's default assistant")
        await self.store.set_channel_setting(team_id, channel_id, assistant_id, user_id)

    async def switch_thread(self, key: ConversationKey, assistant_id: str) -> None:
        """The thread's next turn runs `assistant_id`, on the same backend conversation."""
        await self.store.set_thread_assistant(key, self.engine_name, assistant_id)

    async def channel_defaults(self, team_id: str) -> list[ChannelSetting]:
        return await self.store.list_channel_settings(team_id)
