"""Point the unmodified discord.py client at another REST base and gateway.

crowdcut talks to real Discord in production, possibly through a REST proxy
(a Discord-compatible HTTP front such as a rate-limit proxy), and to
:mod:`bot.emulator` in tests and in ``crowdcut demo``. discord.py 2.7 has no
setting for either endpoint, so this module uses the two narrowest hooks its
source offers:

* **REST**: every request, webhook and interaction callbacks included, builds its
  URL from the class attribute ``discord.http.Route.BASE`` at call time. Setting
  it is the documented-by-source way to change the base; it is process-wide.
* **Gateway**: a plain ``Client`` never asks ``GET /gateway/bot``; it connects to
  ``DiscordWebSocket.DEFAULT_GATEWAY`` (``wss://gateway.discord.gg/``) and later to
  the ``resume_gateway_url`` READY gave it. Every gateway connection goes through
  ``client.http.ws_connect(url)``, so we wrap that one bound method *per client*:
  a URL aimed at the default gateway host is redirected to the configured
  gateway, keeping discord.py's own query (``v``, ``encoding``, ``compress``).
  Resume URLs pass untouched, and so do voice websockets (another host).

When no gateway URL is given but the REST base was changed, the gateway is
discovered the way Discord documents it: ``GET /gateway/bot`` on the new base,
once, on the first connect. That is what the emulator answers with its own
``ws://127.0.0.1:PORT/gateway``; a REST proxy in front of real Discord answers
with Discord's gateway, which is then used unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

log = logging.getLogger(__name__)

#: discord.py's own default, restored by :func:`reset_discord_py_endpoints`
DISCORD_API_BASE = f"https://discord.com/api/v{discord.http.INTERNAL_API_VERSION}"

_ORIGINAL_WS_CONNECT = "_crowdcut_original_ws_connect"


def point_discord_py_at(
    api_base: str | None,
    gateway_url: str | None,
    client: discord.Client | None = None,
) -> None:
    """Send discord.py's REST calls to ``api_base`` and ``client``'s gateway to ``gateway_url``.

    ``api_base`` is the full versioned base, e.g. ``http://127.0.0.1:8765/api/v10``;
    ``None`` leaves discord.py's base as it is. It applies to the whole process
    (discord.py keeps it on a class).

    ``gateway_url`` (e.g. ``ws://127.0.0.1:8765/gateway``, the DISCORD_GATEWAY_URL
    setting) applies to ``client`` only. ``None`` means: ask ``GET /gateway/bot``
    on ``api_base`` if that was given, else keep Discord's gateway. Call this
    before ``client.login``/``client.start``; calling it again replaces the
    earlier choice.
    """
    if api_base is not None:
        Route.BASE = api_base.rstrip("/")
        log.info("discord.py REST base is %s", Route.BASE)
    if client is None:
        if gateway_url is not None:
            raise ValueError("a gateway URL is set per client: pass the client")
        return
    if gateway_url is None and api_base is None:
        _unwrap_ws_connect(client)
        return
    _wrap_ws_connect(client, gateway_url)


def reset_discord_py_endpoints(client: discord.Client | None = None) -> None:
    """Undo :func:`point_discord_py_at`: Discord's REST base, and ``client``'s own gateway."""
    Route.BASE = DISCORD_API_BASE
    if client is not None:
        _unwrap_ws_connect(client)


def _unwrap_ws_connect(client: discord.Client) -> None:
    http = client.http
    original = http.__dict__.pop(_ORIGINAL_WS_CONNECT, None)
    if original is not None:
        http.__dict__.pop("ws_connect", None)


def _wrap_ws_connect(client: discord.Client, gateway_url: str | None) -> None:
    http = client.http
    original = http.__dict__.get(_ORIGINAL_WS_CONNECT) or http.ws_connect
    default_host = DiscordWebSocket.DEFAULT_GATEWAY.host
    resolved: dict[str, yarl.URL] = {}
    if gateway_url is not None:
        resolved["url"] = yarl.URL(gateway_url)

    async def ws_connect(url: str, *, compress: int = 0) -> Any:
        wanted = yarl.URL(url)
        if wanted.host == default_host:
            target = resolved.get("url")
            if target is None:
                # Discord's documented discovery; cached so reconnects don't repeat it
                _shards, discovered, _limits = await http.get_bot_gateway()
                target = resolved["url"] = yarl.URL(discovered)
                log.info("gateway discovered at %s", target)
            url = str(target.with_query(wanted.query))
        return await original(url, compress=compress)

    http.__dict__[_ORIGINAL_WS_CONNECT] = original
    http.__dict__["ws_connect"] = ws_connect
