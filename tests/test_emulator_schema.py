"""The emulator answers, and discord.py asks, what Discord's OpenAPI description says.

Responses are validated strictly: every schema of the spec that lists
``properties`` also gets ``unevaluatedProperties: false``, so a field the spec
does not know fails the test, and formats (date-time, uri, snowflake, int32) are
checked. Requests are validated against the route's ``requestBody`` with the
coercion Discord's form parser applies: discord.py sends ids as integers where
the spec says snowflake strings (``attachments[].id``, ``allowed_mentions.users``)
and permissions as strings where it says integers (``default_member_permissions``).
"""

from __future__ import annotations

import copy
import io
import json
import re
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import discord
import jsonschema
import pytest
from discord import app_commands
from discord.ext import commands
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from bot.emulator import DiscordEmulator, RequestRecord
from tests.emulator_fixtures import bot_options, running_bot, running_emulator

SPEC_PATH = Path(__file__).parents[1] / ".." / "shared" / "specs" / "discord-openapi.json"
SPEC_URI = "urn:discord-openapi"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x02\x00\x00\x00\x02" + b"\x00" * 30

pytestmark = pytest.mark.skipif(
    not SPEC_PATH.exists(),
    reason=f"Discord's OpenAPI description is not at {SPEC_PATH} (shared/ beside the repo)",
)


# -- the spec, made strict ---------------------------------------------------------------


def _strict(spec: dict[str, Any]) -> dict[str, Any]:
    """Close every object schema with ``unevaluatedProperties: false``.

    Schemas that are pieces of an ``allOf`` stay open (the ``allOf`` owner is closed
    instead), since a closed piece would refuse its siblings' properties.
    """
    spec = copy.deepcopy(spec)
    pieces: set[int] = set()
    allof_refs: set[str] = set()

    def find_pieces(node: Any) -> None:
        if isinstance(node, dict):
            for member in node.get("allOf", []):
                pieces.add(id(member))
                if "$ref" in member:
                    allof_refs.add(member["$ref"].rsplit("/", 1)[-1])
            for value in node.values():
                find_pieces(value)
        elif isinstance(node, list):
            for value in node:
                find_pieces(value)

    def close(node: Any, name: str | None = None) -> None:
        if isinstance(node, dict):
            opens = "properties" in node or any(
                "properties" in m for m in node.get("allOf", []) if isinstance(m, dict)
            )
            if (
                opens
                and id(node) not in pieces
                and name not in allof_refs
                and "additionalProperties" not in node
                and "unevaluatedProperties" not in node
            ):
                node["unevaluatedProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    find_pieces(spec)
    for name, schema in spec["components"]["schemas"].items():
        close(schema, name)
    return spec


@cache
def spec() -> dict[str, Any]:
    return _strict(json.loads(SPEC_PATH.read_text()))


@cache
def registry() -> Registry:
    return Registry().with_resource(SPEC_URI, Resource(spec(), specification=DRAFT202012))


FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


@FORMATS.checks("uri", raises=ValueError)
def _uri(value: object) -> bool:
    return not isinstance(value, str) or bool(urlsplit(value).scheme)


@FORMATS.checks("snowflake")
def _snowflake(value: object) -> bool:
    return not isinstance(value, str) or bool(re.fullmatch(r"0|[1-9][0-9]{0,19}", value))


@FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


_type = jsonschema.Draft202012Validator.VALIDATORS["type"]


def _coercing_type(validator: Any, types: Any, instance: Any, schema: dict[str, Any]) -> Any:
    kinds = [types] if isinstance(types, str) else list(types)
    if isinstance(instance, int) and not isinstance(instance, bool):
        if "string" in kinds and schema.get("format") == "snowflake":
            return  # discord.py sends snowflakes as integers; Discord parses both
    yield from _type(validator, types, instance, schema)


def as_discord_reads_it(record: RequestRecord) -> Any:
    """The request body with the differences Discord accepts but the spec does not list.

    Each is something discord.py 2.7 sends and Discord takes: ``nsfw`` on commands
    (documented for application commands, missing from ApplicationCommandUpdateRequest),
    ``flags`` on embeds (Embed.to_dict), ``tts`` in an UPDATE_MESSAGE callback
    (InteractionResponse.edit_message), and ``default_member_permissions`` as a
    numeric string where the spec says integer.
    """
    body = copy.deepcopy(record.body)
    if record.route and record.route.endswith("/commands") and isinstance(body, list):
        for command in body:
            command.pop("nsfw", None)
            if isinstance(command.get("default_member_permissions"), str):
                command["default_member_permissions"] = int(command["default_member_permissions"])
    if isinstance(body, dict):
        message = body.get("data") if record.route.endswith("/callback") else body
        if isinstance(message, dict):
            for embed in message.get("embeds") or []:
                embed.pop("flags", None)
            if record.route.endswith("/callback") and body.get("type") == 7:
                message.pop("tts", None)
    return body


ResponseValidator = jsonschema.Draft202012Validator
RequestValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"type": _coercing_type}
)


def _validate(cls: Any, schema: dict[str, Any], instance: Any, what: str) -> None:
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", **_absolutize(schema)}
    validator = cls(root, registry=registry(), format_checker=FORMATS)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        details = "\n".join(
            f"  at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}"
            for e in errors[:10]
        )
        pytest.fail(f"{what} does not match the spec:\n{details}")


def _absolutize(schema: Any) -> Any:
    """Point the route schema's local ``$ref``s into the spec resource."""
    if isinstance(schema, dict):
        return {
            k: (SPEC_URI + v if k == "$ref" and v.startswith("#") else _absolutize(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_absolutize(v) for v in schema]
    return schema


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        parts = node["$ref"].removeprefix("#/").split("/")
        target: Any = spec()
        for part in parts:
            target = target[part]
        node = target
    return node


def operation(route: str, method: str) -> dict[str, Any]:
    try:
        return spec()["paths"][route][method.lower()]
    except KeyError:
        pytest.fail(f"the spec has no {method} {route}")


def response_schema(route: str, method: str, status: int) -> dict[str, Any] | None:
    responses = operation(route, method)["responses"]
    entry = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
    if entry is None:
        pytest.fail(f"the spec has no {status} answer for {method} {route}")
    content = _deref(entry).get("content")
    if content is None:
        return None
    return content["application/json"]["schema"]


def check_response(record: RequestRecord) -> None:
    assert record.route is not None, record
    schema = response_schema(record.route, record.method, record.status)
    if schema is None:
        assert record.response is None, f"{record.method} {record.route} answers no body"
        return
    assert record.response is not None, f"{record.method} {record.route} must answer JSON"
    _validate(
        ResponseValidator,
        schema,
        record.response,
        f"response {record.status} to {record.method} {record.route}",
    )


def check_request(record: RequestRecord) -> None:
    assert record.route is not None, record
    body = operation(record.route, record.method).get("requestBody")
    if record.body is None:
        return
    assert body is not None, f"{record.method} {record.route} takes no body"
    # multipart carries the same JSON as payload_json; the spec's JSON schema covers it
    schema = body["content"]["application/json"]["schema"]
    _validate(
        RequestValidator,
        schema,
        as_discord_reads_it(record),
        f"request {record.method} {record.route}",
    )


def check_all(emu: DiscordEmulator) -> set[tuple[str, str, int]]:
    """Validate every API request and answer the emulator logged; return what was covered."""
    covered = set()
    for record in emu.request_log:
        if record.route is None:  # CDN downloads, unknown routes
            continue
        check_request(record)
        check_response(record)
        covered.add((record.method, record.route, record.status))
    return covered


# -- the checker itself --------------------------------------------------------------------


def test_the_strict_spec_refuses_unknown_fields() -> None:
    schema = {"$ref": "#/components/schemas/UserResponse"}
    user = {
        "id": "1",
        "username": "u",
        "avatar": None,
        "discriminator": "0",
        "public_flags": 0,
        "flags": 0,
        "global_name": None,
        "primary_guild": None,
    }
    _validate(ResponseValidator, schema, user, "a user")
    with pytest.raises(pytest.fail.Exception, match="Unevaluated properties"):
        _validate(ResponseValidator, schema, {**user, "nickname": "x"}, "a user")
    with pytest.raises(pytest.fail.Exception, match="is not of type"):
        _validate(ResponseValidator, schema, {**user, "id": 1}, "a user")
    _validate(
        RequestValidator,
        {"$ref": "#/components/schemas/MessageAttachmentRequest"},
        {"id": 0, "filename": "a.png"},
        "an attachment with an integer id",
    )


# -- answers to direct requests ----------------------------------------------------------


async def test_identity_gateway_and_guild_answers_match_the_spec() -> None:
    async with running_emulator() as emu, aiohttp.ClientSession() as http:
        alice = emu.add_member("alice", roles=["Moderator"])
        auth = {"Authorization": f"Bot {emu.bot_token}"}
        base, g = emu.api_base, emu.guild_id
        gets = [
            "/users/@me",
            "/applications/@me",
            "/oauth2/applications/@me",
            "/gateway",
            "/gateway/bot",
            f"/guilds/{g}",
            f"/guilds/{g}?with_counts=true",
            f"/guilds/{g}/roles",
            f"/guilds/{g}/channels",
            f"/guilds/{g}/members/{alice.id}",
            f"/guilds/{g}/members?limit=10",
            f"/channels/{emu.channels['crowdcut']}",
            f"/users/{alice.id}",
            # errors: unknown message, unknown member, bad query
            f"/channels/{emu.channels['crowdcut']}/messages/1",
            f"/guilds/{g}/members/1",
            f"/channels/{emu.channels['crowdcut']}/messages?limit=0",
        ]
        for path in gets:
            async with http.get(base + path, headers=auth) as r:
                await r.read()
        async with http.post(
            base + "/users/@me/channels", headers=auth, json={"recipient_id": str(alice.id)}
        ) as r:
            dm = await r.json()
        async with http.get(base + "/users/@me") as r:  # no token
            assert r.status == 401
        emu.rate_limit_next("GET", r"^/users/@me$", retry_after=0.01)
        async with http.get(base + "/users/@me", headers=auth) as r:
            assert r.status == 429
            assert float(r.headers["X-RateLimit-Reset-After"]) == pytest.approx(0.01)
            assert r.headers["Via"] and int(r.headers["Retry-After"]) >= 1
        async with http.post(
            base + f"/channels/{emu.channels['crowdcut']}/messages",
            headers=auth,
            json={"content": "x" * 2001},
        ) as r:
            assert (r.status, (await r.json())["code"]) == (400, 50035)
        covered = check_all(emu)
        assert dm["type"] == 1 and dm["recipients"][0]["id"] == str(alice.id)
        assert {s for (_m, _r, s) in covered} >= {200, 400, 401, 404, 429}


# -- a whole bot session -----------------------------------------------------------------


async def test_a_bot_session_asks_and_gets_what_the_spec_says() -> None:
    async with running_emulator() as emu:
        bot = commands.Bot(command_prefix="!", **bot_options())
        guild_obj = discord.Object(emu.guild_id)

        class Approve(discord.ui.View):
            def __init__(self) -> None:
                super().__init__(timeout=None)

            @discord.ui.button(
                label="Approve",
                style=discord.ButtonStyle.success,
                custom_id="crowdcut:cut:approve:1",
                emoji="✅",
            )
            async def approve(
                self, interaction: discord.Interaction, _b: discord.ui.Button
            ) -> None:
                await interaction.response.edit_message(content="approved", view=None)

        @bot.tree.command(name="prompt", description="Submit a prompt", guild=guild_obj)
        @app_commands.describe(text="What to see", image="A reference")
        @app_commands.default_permissions(send_messages=True)
        async def prompt(
            interaction: discord.Interaction,
            text: str,
            slots: int,
            image: discord.Attachment | None = None,
        ) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content=f"queued {text}")
            follow = await interaction.followup.send(
                "details", ephemeral=True, wait=True, file=discord.File(io.BytesIO(b"1"), "a.txt")
            )
            await follow.edit(content="details (edited)")
            await interaction.followup.send("public note", wait=True)

        @bot.tree.command(name="hello", description="Says hello", guild=guild_obj)
        async def hello(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(
                "hello", ephemeral=True, file=discord.File(io.BytesIO(PNG), "hi.png")
            )
            await interaction.delete_original_response()

        class Rename(discord.ui.Modal, title="Rename"):
            name = discord.ui.TextInput(label="New name", custom_id="crowdcut:rename:name")

            async def on_submit(self, interaction: discord.Interaction) -> None:
                await interaction.response.send_message(f"renamed to {self.name.value}")

        @bot.tree.command(name="rename", description="Rename", guild=guild_obj)
        async def rename(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(Rename())

        @bot.tree.command(name="cut", description="Cut", guild=guild_obj)
        async def cut(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("preview", view=Approve())

        alice = emu.add_member("alice", roles=["Moderator"])
        channel_id = emu.channels["crowdcut"]
        async with running_bot(emu, bot):
            await bot.tree.sync(guild=guild_obj)
            await bot.tree.fetch_commands(guild=guild_obj)
            channel = bot.get_channel(channel_id)
            plain = await channel.send(
                f"hi {alice.mention}",
                embed=discord.Embed(title="t", description="d", color=0x00FF00)
                .add_field(name="f", value="v")
                .set_footer(text="foot")
                .set_image(url="attachment://ref.png"),
                file=discord.File(io.BytesIO(PNG), "ref.png"),
                allowed_mentions=discord.AllowedMentions(users=[alice], everyone=False),
            )
            json_msg = await channel.send(
                "json only", view=Approve(), reference=plain.to_reference()
            )
            await json_msg.edit(content="json edited", embeds=[discord.Embed(title="e")])
            await plain.add_reaction("👍")
            await emu.add_reaction(alice.id, channel_id, plain.id, "👍")
            await channel.fetch_message(plain.id)
            [u async for u in (await channel.fetch_message(plain.id)).reactions[0].users(limit=1)]
            [m async for m in channel.history(limit=5)]
            await plain.remove_reaction("👍", bot.user)
            await plain.remove_reaction("👍", discord.Object(alice.id))
            await (await bot.create_dm(discord.Object(alice.id))).send("psst")
            await bot.fetch_user(alice.id)
            await bot.get_guild(emu.guild_id).fetch_member(alice.id)
            await json_msg.delete()

            it = await emu.invoke_slash(
                alice.id, channel_id, "prompt", {"text": "fox", "slots": 2, "image": ("r.png", PNG)}
            )
            await it.wait_reply(timeout=5)
            await emu.wait_for_message(
                channel_id, lambda m: m["content"] == "public note", since=0, timeout=5
            )
            it = await emu.invoke_slash(alice.id, channel_id, "hello")
            await it.wait_acked()
            it = await emu.invoke_slash(alice.id, channel_id, "cut")
            preview = await it.wait_reply()
            click = await emu.click_button(alice.id, int(preview["id"]), "crowdcut:cut:approve:1")
            assert (await click.wait_reply())["content"] == "approved"
            it = await emu.invoke_slash(alice.id, channel_id, "rename")
            await it.wait_acked()
            submitted = await emu.submit_modal(it, {"crowdcut:rename:name": "Finale"})
            assert (await submitted.wait_reply())["content"] == "renamed to Finale"

        covered = {(m, r) for (m, r, _s) in check_all(emu)}
        wanted = {
            ("GET", "/users/@me"),
            ("GET", "/oauth2/applications/@me"),
            ("GET", "/gateway/bot"),
            ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands"),
            ("GET", "/applications/{application_id}/guilds/{guild_id}/commands"),
            ("POST", "/channels/{channel_id}/messages"),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}"),
            ("GET", "/channels/{channel_id}/messages/{message_id}"),
            ("GET", "/channels/{channel_id}/messages"),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}"),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me"),
            ("GET", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}"),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/{user_id}",
            ),
            ("POST", "/users/@me/channels"),
            ("GET", "/users/{user_id}"),
            ("GET", "/guilds/{guild_id}/members/{user_id}"),
            ("POST", "/interactions/{interaction_id}/{interaction_token}/callback"),
            ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original"),
            ("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/@original"),
            ("POST", "/webhooks/{webhook_id}/{webhook_token}"),
            ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"),
        }
        assert wanted <= covered, sorted(wanted - covered)
        multipart = [r for r in emu.request_log if r.content_type == "multipart/form-data"]
        assert {r.route for r in multipart} >= {
            "/channels/{channel_id}/messages",
            "/interactions/{interaction_id}/{interaction_token}/callback",
            "/webhooks/{webhook_id}/{webhook_token}",
        }
        callbacks = [r for r in emu.request_log if r.route and r.route.endswith("/callback")]
        assert all(r.query.get("with_response") for r in callbacks)
        assert any("resource" in (r.response or {}) for r in callbacks)


async def test_nonces_reaction_clears_and_a_second_guild_match_the_spec() -> None:
    async with running_emulator() as emu:
        bot = commands.Bot(command_prefix="!", **bot_options())
        second = emu.add_guild("second server")
        alice = emu.add_member("alice", guild_id=second.id)
        async with running_bot(emu, bot):
            channel = bot.get_channel(emu.channels["crowdcut"])
            sent = await channel.send("clip", nonce="n-1")
            assert (await channel.send("clip", nonce="n-1")).id == sent.id
            await channel.send(file=discord.File(io.BytesIO(PNG), "a.png"), nonce="n-2")
            await sent.add_reaction("👍")
            await sent.add_reaction("🔥")
            await sent.clear_reaction("🔥")
            await sent.clear_reactions()
            [m async for m in channel.history(limit=2, after=discord.Object(0))]
            [m async for m in channel.history(limit=2, around=sent)]
            g2 = bot.get_guild(second.id)
            await g2.fetch_member(alice.id)
            await g2.fetch_channels()
            await g2.fetch_roles()
            await bot.fetch_guild(second.id)
            emu.delete_channel(second.channels["general"])
            with pytest.raises(discord.NotFound):
                await bot.get_channel(second.channels["crowdcut"]).fetch_message(sent.id)
        covered = {(m, r) for (m, r, _s) in check_all(emu)}
        assert {
            ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions"),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}"),
            ("GET", "/guilds/{guild_id}/channels"),
            ("GET", "/guilds/{guild_id}/roles"),
        } <= covered
