"""``python -m bot.emulator --port 8765``: run the Discord emulator for a developer."""

from __future__ import annotations

import argparse
import asyncio
import logging

from bot.emulator.server import DiscordEmulator

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bot.emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument(
        "--upload-limit",
        type=int,
        default=10 * 1024 * 1024,
        help="per-file upload limit in bytes (413 above it)",
    )
    parser.add_argument(
        "--member",
        action="append",
        default=[],
        metavar="NAME[:ROLE,...]",
        help="add a member, e.g. --member alice:Moderator (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    emu = DiscordEmulator(upload_limit=args.upload_limit, port=args.port)
    await emu.start()
    for spec in args.member:
        name, _, roles = spec.partition(":")
        user = emu.add_member(name, roles=[r for r in roles.split(",") if r])
        print(f"member     {user.name}: {user.id}")
    info = emu.describe()
    print(f"api_base   {info['api_base']}")
    print(f"gateway    {info['gateway_url']}")
    print(f"bot token  {info['bot_token']}")
    print(f"app id     {info['application_id']}")
    print(f"guild id   {info['guild_id']}")
    for name, channel_id in info["channels"].items():
        print(f"#{name:<10} {channel_id}")
    print("Ctrl-C to stop.", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await emu.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
