"""Who may use what: the bot's channels (ALLOWED_CHANNELS) and each assistant's
`allowed_channels`, `allowed_users` and `allowed_usergroups`.

Channels limit channels and people limit people: a DM with the bot is not a channel, so only an
assistant's people rules apply there. A message the bot may not answer is never sent to the
model; its writer is told why once per thread (`first_refusal`), not on every message.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from bot.assistant_choice import AssistantChooser
from bot.definitions import AssistantDefinition
from bot.messages import ConversationKey

REMEMBERED_REFUSALS = 10_000  # (thread, person) refusals told, kept to tell each only once


@dataclass(frozen=True)
class Rules:
    """One assistant's rules; empty sets allow everyone (everywhere)."""

    assistant_name: str = ""
    channels: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    usergroups: frozenset[str] = frozenset()

    @classmethod
    def of(cls, definition: AssistantDefinition | None) -> Rules:
        if definition is None:
            return cls()
        return cls(
            definition.name,
            frozenset(definition.allowed_channels),
            frozenset(definition.allowed_users),
            frozenset(definition.allowed_usergroups),
        )

    @property
    def limits_people(self) -> bool:
        return bool(self.users or self.usergroups)


class GroupMembers(Protocol):
    async def members(self, usergroup_id: str) -> frozenset[str]:
        """The people in a user group (none when it cannot be read)."""
        ...


RulesFor = Callable[[str], Awaitable[Rules]]


def rules_from_catalog(
    get_assistant: Callable[[str], Awaitable[AssistantDefinition | None]],
) -> RulesFor:
    """Rules read with each assistant (the bot's own definitions, kept in its store)."""

    async def rules_for(assistant_id: str) -> Rules:
        return Rules.of(await get_assistant(assistant_id))

    return rules_for


def rules_by_id(rules: Mapping[str, Rules]) -> RulesFor:
    """Rules known by assistant id (the Assistants API keeps none: ASSISTANTS_FILE's)."""

    async def rules_for(assistant_id: str) -> Rules:
        return rules.get(assistant_id, Rules())

    return rules_for


async def no_rules(assistant_id: str) -> Rules:
    """No assistant has rules: a message's thread need not even be looked up."""
    return Rules()


Reason = Literal["bot_channel", "assistant_channel", "person"]


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    assistant_name: str = ""


class Access:
    def __init__(
        self,
        chooser: AssistantChooser,
        bot_channels: frozenset[str] = frozenset(),
        rules_for: RulesFor | None = None,
        groups: GroupMembers | None = None,
    ) -> None:
        self.chooser = chooser
        self.bot_channels = bot_channels  # empty: any channel
        self.rules_for = rules_for or rules_from_catalog(chooser.assistant)
        self.groups = groups
        self._told: OrderedDict[tuple[ConversationKey, str], None] = OrderedDict()

    async def refusal(self, key: ConversationKey, user_id: str, is_direct: bool) -> Refusal | None:
        """Why a message in this thread from this person is not answered; None if it is."""
        if not is_direct and self.bot_channels and key.channel_id not in self.bot_channels:
            return Refusal("bot_channel")
        if self.rules_for is no_rules:
            return None
        choice = await self.chooser.for_thread(key)
        return await self._refusal(
            await self.rules_for(choice.assistant_id), key, user_id, is_direct
        )

    async def may_use(
        self, assistant: AssistantDefinition, channel_id: str, user_id: str, is_direct: bool
    ) -> bool:
        rules = Rules.of(assistant)
        if not (rules.channels or rules.limits_people):
            rules = await self.rules_for(assistant.id)
        key = ConversationKey("", channel_id, "")
        return await self._refusal(rules, key, user_id, is_direct) is None

    async def usable(
        self,
        assistants: Sequence[AssistantDefinition],
        channel_id: str,
        user_id: str,
        is_direct: bool,
    ) -> list[AssistantDefinition]:
        """The assistants this person may use here, in the order given."""
        return [a for a in assistants if await self.may_use(a, channel_id, user_id, is_direct)]

    def first_refusal(self, key: ConversationKey, user_id: str) -> bool:
        """True the first time a person is refused in a thread (then they are told why), False
        after. Kept in this process: after a restart a thread is told once more."""
        told = (key, user_id)
        if told in self._told:
            self._told.move_to_end(told)
            return False
        self._told[told] = None
        if len(self._told) > REMEMBERED_REFUSALS:
            self._told.popitem(last=False)
        return True

    async def _refusal(
        self, rules: Rules, key: ConversationKey, user_id: str, is_direct: bool
    ) -> Refusal | None:
        if not is_direct and rules.channels and key.channel_id not in rules.channels:
            return Refusal("assistant_channel", rules.assistant_name)
        if rules.limits_people and not await self._is_allowed(rules, user_id):
            return Refusal("person", rules.assistant_name)
        return None

    async def _is_allowed(self, rules: Rules, user_id: str) -> bool:
        if user_id in rules.users:
            return True
        if self.groups is None:
            return False
        for group in sorted(rules.usergroups):
            if user_id in await self.groups.members(group):
                return True
        return False
