"""Slack's side of shared files: reading them from the event, downloading them safely."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.file_ingest import FileRefused
from bot.messages import SharedFile
from bot.slack import inbound
from bot.slack.retries import retry_handlers

log = logging.getLogger(__name__)

SLACK_FILE_HOST = "files.slack.com"
CHUNK = 64 * 1024
DEFAULT_PORTS = {"https": 443, "http": 80}


def shared_files(files: object) -> tuple[SharedFile, ...]:
    """The files of a message event (or a message in a shortcut payload); entries that are not
    files with an id are left out."""
    if not isinstance(files, list):
        return ()
    return tuple(
        _shared_file(f) for f in files if isinstance(f, dict) and inbound.slack_id(f.get("id"))
    )


def _shared_file(f: dict[str, Any]) -> SharedFile:
    if f.get("file_access") == "check_file_info":
        # Slack Connect: only the id; files.info has the rest (SlackFileSource.describe).
        return SharedFile(id=str(f["id"]), name="", mimetype="", size=0, download_url="")
    size = f.get("size")
    return SharedFile(
        id=str(f["id"]),
        name=inbound.text(f.get("name") or f.get("title"), 255) or str(f["id"]),
        mimetype=inbound.text(f.get("mimetype"), 255),
        size=size if isinstance(size, int) and size > 0 else 0,
        download_url=inbound.text(f.get("url_private_download") or f.get("url_private"), 2048),
    )


class SlackFileSource:
    """Downloads shared files with the bot token, only from Slack's own file host.

    The origins allowed (scheme, host and port) are https://files.slack.com and that of
    SLACK_API_URL (GovSlack, a proxy, the tests' emulator); a link to anywhere else, another port
    of the same host included, is refused, so an event cannot make the bot send its token to
    another service (SSRF). Redirects are not followed, for the same reason.
    """

    def __init__(self, token: str, api_url: str, timeout: float = 120.0, retries: int = 4) -> None:
        self.token = token
        self.retries = retries  # of files.info, as of every Slack call (SLACK_RETRIES)
        self.api_url = api_url
        self.allowed = {("https", SLACK_FILE_HOST, 443)}
        api = origin(api_url)
        if api is not None:
            self.allowed.add(api)
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def describe(self, file: SharedFile) -> SharedFile:
        """The file with its name, type, size and link; for a stub (Slack Connect channels share
        files as ids with `file_access: check_file_info`) they come from files.info."""
        if file.download_url:
            return file
        if self._client is None:
            self._client = AsyncWebClient(
                token=self.token, base_url=self.api_url, session=self._http()
            )
            self._client.retry_handlers = retry_handlers(self.retries)
        try:
            info = await self._client.files_info(file=file.id)
        except SlackApiError as exc:
            error = str(exc.response.get("error") or "unknown_error")
            log.warning("event=file_info_failed file=%s error=%s", file.id, error)
            raise FileRefused("slack_info_refused", error) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FileRefused("slack_unreachable", type(exc).__name__) from exc
        described = _shared_file({**(info.get("file") or {}), "id": file.id})
        if not described.download_url:  # a stub again, or a file hidden by the plan's limits
            raise FileRefused("no_download_link")
        return described

    async def fetch(self, file: SharedFile, max_bytes: int) -> bytes:
        if not file.download_url:
            raise FileRefused("link_gone")
        link = origin(file.download_url)
        if link not in self.allowed:
            where = "{}://{}:{}".format(*link) if link else "malformed"
            log.warning("event=file_host_refused file=%s origin=%s", file.id, where)
            raise FileRefused("foreign_host")
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with self._http().get(
                file.download_url, headers=headers, allow_redirects=False
            ) as response:
                if response.status != 200:
                    raise FileRefused("download_refused", str(response.status))
                if response.content_type == "text/html" and file.mimetype != "text/html":
                    raise FileRefused("sign_in_page")
                return await _read_capped(response, max_bytes)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FileRefused("download_failed", type(exc).__name__) from exc


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a URL, the port filled in for http and https; None if malformed."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is not a number, or out of range
        return None
    if not parts.hostname or port is None:
        return None
    return scheme, parts.hostname, port


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    too_large = FileRefused("over_limit", limit=max_bytes)
    if response.content_length is not None and response.content_length > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_chunked(CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
