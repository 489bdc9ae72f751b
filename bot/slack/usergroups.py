"""Slack user groups' members (usergroups.users.list, scope usergroups:read), kept a while.

A group's members are read when first needed, then kept for MEMBERS_TTL seconds; after that the
kept list still answers at once while a fresh one is fetched in the background, so a message's
access check waits on Slack at most once per group (the first time).
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

MEMBERS_TTL = 300.0


class SlackUsergroups:
    def __init__(self, client: AsyncWebClient, ttl: float = MEMBERS_TTL) -> None:
        self.client = client
        self.ttl = ttl
        self._members: dict[str, tuple[float, frozenset[str]]] = {}
        self._refreshing: dict[str, asyncio.Task[frozenset[str]]] = {}

    async def members(self, usergroup_id: str) -> frozenset[str]:
        kept = self._members.get(usergroup_id)
        if kept is None:
            return await self._refresh(usergroup_id)
        fetched_at, members = kept
        if time.monotonic() - fetched_at > self.ttl and usergroup_id not in self._refreshing:
            self._refreshing[usergroup_id] = asyncio.create_task(self._refresh(usergroup_id))
        return members

    async def _refresh(self, usergroup_id: str) -> frozenset[str]:
        try:
            answer = await self.client.usergroups_users_list(usergroup=usergroup_id)
            users = answer.get("users")
            members = frozenset(u for u in users if isinstance(u, str)) if users else frozenset()
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            # A group that is gone, a missing scope, Slack out of reach: the members last read
            # stand (nobody, if none were), until it can be read.
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else exc
            log.warning("event=usergroup_unreadable usergroup=%s error=%s", usergroup_id, error)
            kept = self._members.get(usergroup_id)
            members = kept[1] if kept else frozenset()
        finally:
            self._refreshing.pop(usergroup_id, None)
        self._members[usergroup_id] = (time.monotonic(), members)
        return members
