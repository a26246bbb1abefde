"""``crowdcut doctor``: what crowdcut found, and whether it can run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bot.core.costs import describe_costs
from bot.errors import ConfigError
from bot.settings import Settings
from storage.store import describe_database

REQUIRED_ENCODERS = ("libx264", "aac")


def check_generators(settings: Settings, timeout: float = 20.0) -> list[tuple[bool, str, str]]:
    """Each configured backend: what it makes, and whether it answers and is set up right
    (``Generator.check``, which spends nothing)."""
    import asyncio

    from bot.errors import CrowdcutError
    from bot.generators import create_generator

    async def one(name: str) -> tuple[bool, str, str]:
        try:
            gen = create_generator(name, settings)
        except (ConfigError, ValueError) as e:
            return False, name, str(e)
        try:
            said = await asyncio.wait_for(gen.check(), timeout)
            return True, name, f"{said} — {gen.capabilities.describe()}"
        except TimeoutError:
            return False, name, f"no answer within {timeout:g} s"
        except CrowdcutError as e:
            return False, name, str(e)
        finally:
            await gen.aclose()

    async def all_of_them() -> list[tuple[bool, str, str]]:
        return [await one(name) for name in settings.generator_names]

    return asyncio.run(all_of_them())


def run_doctor(env_file: str | None, *, data_dir: str | None = None) -> int:
    """Print a report; return 0 when everything needed is there, 1 otherwise."""
    ok = True

    def line(good: bool, what: str, detail: str, *, needed: bool = True) -> None:
        nonlocal ok
        ok = ok and (good or not needed)
        mark = "ok" if good else ("FAIL" if needed else "warn")
        print(f"  [{mark:>4}] {what:<14} {detail}")

    print("crowdcut doctor")
    try:
        overrides = {"data_dir": Path(data_dir)} if data_dir else {}
        settings = Settings.load(env_file=env_file, **overrides)
        source = env_file if env_file and Path(env_file).is_file() else "environment only"
        line(True, "settings", f"loaded ({source})")
    except ConfigError as e:
        line(False, "settings", str(e))
        return 1
    for problem in settings.problems():
        line(False, "settings", problem)

    from bot.media.ffmpeg import ffmpeg_version, has_encoders, resolve_ffmpeg

    try:
        binary = resolve_ffmpeg(settings.ffmpeg_binary or None)
        line(True, "ffmpeg", f"{binary}")
        line(True, "ffmpeg version", ffmpeg_version(binary))
        enc = has_encoders(binary, REQUIRED_ENCODERS)
        for name, present in enc.items():
            line(present, "encoder", f"{name} {'found' if present else 'MISSING'}")
    except ConfigError as e:
        line(False, "ffmpeg", str(e))

    try:
        import av

        line(True, "probing", f"PyAV {av.__version__} (no ffprobe needed)")
    except ImportError as e:
        line(False, "probing", f"PyAV is not installed: {e}")

    data = settings.data_dir
    try:
        data.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data):
            pass
        line(True, "data dir", f"{data.resolve()} (writable)")
    except OSError as e:
        line(False, "data dir", f"{data}: {e}")

    db = settings.db_path
    if db.exists():
        facts = describe_database(db)
        if "error" in facts:
            line(False, "database", f"{db}: {facts['error']}")
        else:
            line(
                True,
                "database",
                f"{db} (journal {facts['journal_mode']}, "
                f"{facts['migrations']} migrations applied, {facts['pending']} pending)",
            )
    else:
        line(True, "database", f"{db} (will be created on first start)")

    for good, name, detail in check_generators(settings):
        line(good, "generator", detail if detail.startswith(name) else f"{name}: {detail}")
    for good, what, detail in describe_costs(settings):
        line(good, what, detail, needed=False)
    line(
        bool(settings.discord_token),
        "discord token",
        "set"
        if settings.discord_token
        else "DISCORD_TOKEN is empty (needed by `crowdcut run`; the demo does not need it)",
        needed=False,
    )
    print("all good" if ok else "something needed is missing (see FAIL above)")
    return 0 if ok else 1
