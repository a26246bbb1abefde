"""The ``crowdcut`` command line.

``crowdcut run``            start the bot (DISCORD_TOKEN from the environment or .env)
``crowdcut demo``           a simulated community session, end to end, on embedded defaults
``crowdcut doctor``         check ffmpeg, encoders, database, media folder and settings
``crowdcut assemble``       re-render a project's cut
``crowdcut sync-commands``  push the slash commands to Discord (an explicit action)
``crowdcut worker``         run the generation queue alone, without Discord
``crowdcut web``            serve the project pages alone (read-only on the database)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from bot.errors import ConfigError, CrowdcutError
from bot.settings import Settings

log = logging.getLogger(__name__)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    return Settings.load(env_file=args.env_file, **overrides)


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("discord").setLevel(max(logging.INFO, getattr(logging, level, 20)))


def cmd_doctor(args: argparse.Namespace) -> int:
    from bot.doctor import run_doctor

    return run_doctor(args.env_file, data_dir=args.data_dir)


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.demo import run_demo

    return asyncio.run(
        run_demo(
            Path(args.out),
            direct=args.direct,
            members=args.members,
            seconds=args.seconds,
            keep=args.keep,
            serve=args.serve,
        )
    )


def cmd_assemble(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _logging(settings.log_level)

    async def go() -> int:
        from bot.app import build_app
        from bot.services.cuts import CutService

        app = build_app(settings)
        try:
            project = await app.store.get_project(args.project)
            if project is None:
                print(f"crowdcut: there is no project #{args.project}", file=sys.stderr)
                return 1
            done = await CutService(app).render(project, by=None, progress=_print_progress)
            print(
                f"\nmaster:   {done.result.master}\npreview:  {done.result.preview}\n"
                f"manifest: {done.result.manifest}"
            )
            return 0
        finally:
            await app.aclose()

    return asyncio.run(go())


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _logging(settings.log_level)

    async def go() -> int:
        from bot.app import build_app
        from bot.services.worker import GenerationWorker

        app = build_app(settings)
        worker = GenerationWorker(app)
        try:
            await worker.start()
            if args.until_idle:
                await worker.wait_idle()
            else:
                await asyncio.Event().wait()
            return 0
        finally:
            await worker.stop()
            await app.aclose()

    return asyncio.run(go())


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _logging(settings.log_level)
    if not settings.discord_token:
        raise ConfigError(
            "DISCORD_TOKEN is empty: set it in the environment or in .env (see .env.example)."
        )
    from bot.frontend.runner import run_bot

    return asyncio.run(run_bot(settings))


def cmd_sync(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _logging(settings.log_level)
    if not settings.discord_token:
        raise ConfigError("DISCORD_TOKEN is empty: set it in the environment or in .env.")
    from bot.frontend.runner import sync_commands

    return asyncio.run(sync_commands(settings, guild_id=args.guild))


def cmd_web(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _logging(settings.log_level)

    async def go() -> int:
        from bot.web.server import WebServer, serve_until_stopped

        server = WebServer(settings, host=args.host, port=args.port)
        try:
            url = await server.start()
        except (FileNotFoundError, RuntimeError) as e:
            await server.stop()
            raise ConfigError(f"{e} (DATA_DIR={settings.data_dir})") from None
        except OSError as e:
            await server.stop()
            raise ConfigError(
                f"the pages cannot listen on {server.host}:{server.port}: {e.strerror}; "
                "set WEB_HOST / WEB_PORT (or --host / --port)."
            ) from None
        print(f"crowdcut: project pages on {url} (read-only; Ctrl-C stops)", flush=True)
        await serve_until_stopped(server)
        return 0

    return asyncio.run(go())


def _print_progress(stage: str, fraction: float) -> None:
    bar = "#" * int(fraction * 20)
    print(f"\r  {stage:<12} [{bar:<20}] {fraction * 100:5.1f}%", end="", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crowdcut", description=__doc__.split("\n\n")[0])
    p.add_argument("--env-file", default=".env", help="settings file (default: .env)")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the bot")
    run.add_argument("--data-dir", help="override DATA_DIR")
    run.set_defaults(fn=cmd_run)

    demo = sub.add_parser("demo", help="a simulated community session, end to end")
    demo.add_argument(
        "--out",
        default="crowdcut-demo",
        help="folder for the demo's data and video (emptied first)",
    )
    demo.add_argument(
        "--direct",
        action="store_true",
        help="call the services directly instead of going through the Discord emulator",
    )
    demo.add_argument("--members", type=int, default=6, help="simulated members")
    demo.add_argument("--seconds", type=float, default=32.0, help="length of the song")
    demo.add_argument("--keep", action="store_true", help="keep the folder's earlier data")
    demo.add_argument(
        "--serve", action="store_true", help="then serve the project's page until Ctrl-C"
    )
    demo.set_defaults(fn=cmd_demo)

    doc = sub.add_parser("doctor", help="check what crowdcut needs")
    doc.add_argument("--data-dir", help="override DATA_DIR")
    doc.set_defaults(fn=cmd_doctor)

    asm = sub.add_parser("assemble", help="re-render a project's cut")
    asm.add_argument("--project", type=int, required=True, help="project id")
    asm.add_argument("--data-dir", help="override DATA_DIR")
    asm.set_defaults(fn=cmd_assemble)

    sync = sub.add_parser("sync-commands", help="push slash commands to Discord")
    sync.add_argument("--guild", type=int, help="sync to one guild only (instant)")
    sync.add_argument("--data-dir", help="override DATA_DIR")
    sync.set_defaults(fn=cmd_sync)

    work = sub.add_parser("worker", help="run the generation queue without Discord")
    work.add_argument("--data-dir", help="override DATA_DIR")
    work.add_argument("--until-idle", action="store_true", help="exit once nothing waits")
    work.set_defaults(fn=cmd_worker)

    web = sub.add_parser("web", help="serve the project pages alone (read-only)")
    web.add_argument("--data-dir", help="override DATA_DIR")
    web.add_argument("--host", help="override WEB_HOST")
    web.add_argument("--port", type=int, help="override WEB_PORT")
    web.set_defaults(fn=cmd_web)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except ConfigError as e:
        print(f"crowdcut: configuration problem: {e}", file=sys.stderr)
        return 2
    except CrowdcutError as e:
        print(f"crowdcut: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
