"""The assistant thread's status line ("is thinking…"), shown in DMs while a turn runs."""

from __future__ import annotations

import asyncio
import logging

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.retries import SLACK_FAILURES, failure_name
from bot.slack.words import THINKING_STATUS

log = logging.getLogger(__name__)
# Slack removes a status after two minutes without a message: refresh it well before that.
STATUS_REFRESH = 90.0


class StatusLine:
    """One thread's status, refreshed while it shows."""

    def __init__(
        self, client: AsyncWebClient, channel: str, thread_ts: str, refresh: float = STATUS_REFRESH
    ) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.refresh = refresh
        self.shown: list[str] | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def show(self, loading_messages: list[str]) -> None:
        if self.shown == loading_messages:
            return
        self.shown = loading_messages
        await self._send(THINKING_STATUS, loading_messages)
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh())

    async def clear(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        if self.shown is not None:
            self.shown = None
            await self._send("", None)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            if self.shown is not None:
                await self._send(THINKING_STATUS, self.shown)

    async def _send(self, status: str, loading_messages: list[str] | None) -> None:
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=self.channel,
                thread_ts=self.thread_ts,
                status=status,
                loading_messages=loading_messages,
            )
        except SLACK_FAILURES as exc:
            log.info("event=status_failed channel=%s error=%s", self.channel, failure_name(exc))
