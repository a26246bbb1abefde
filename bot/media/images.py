"""Checking and cleaning a member's reference image before any generator sees it.

:func:`check_reference_image` takes the raw bytes a member uploaded and returns a clean
8-bit RGB PNG, or raises :class:`~bot.errors.InvalidImage` with a message written for that
member. In order it:

1. refuses more than ``max_bytes`` before reading anything;
2. decides the type from the content (magic bytes), never from the file name, and accepts
   PNG, JPEG, WebP and GIF only; SVG, PDF, HEIC, TIFF, video, text... get their own message;
3. reads only the header and refuses more than ``max_pixels`` *before* decoding, so a
   30,000 x 30,000 PNG of a few kilobytes is turned away without allocating gigabytes
   (Pillow's own ``DecompressionBombError`` is turned into the same message);
4. decodes the first frame (animated GIF/WebP give their first frame); a truncated or
   corrupt file is refused as damaged;
5. applies the EXIF orientation, converts embedded ICC colour profiles to sRGB, and
   converts every mode to 8-bit RGB: 16-bit greyscale is scaled (not clipped), and anything
   with transparency (RGBA, LA, palette with a transparent colour) is flattened onto
   **white**, because video has no alpha and white is what most people expect behind a
   cut-out logo;
6. shrinks it so the longest side is at most ``max_side`` (Lanczos);
7. writes a fresh PNG from the pixels alone, so no EXIF, GPS, XMP, ICC or text chunk
   from the upload survives.

All of this is CPU-bound: from async code call :func:`check_reference_image_async`.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import logging
import struct
import zlib
from dataclasses import dataclass

from PIL import Image, ImageOps

from bot.errors import InvalidImage

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_SIDE = 1536

#: Pillow format names we accept, in the order we name them to members
ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF")

_SEND = "send a PNG, JPEG, WebP or GIF image."
_DAMAGED = "That image is damaged or incomplete; " + _SEND

# Errors Pillow raises from broken files: truncated data (OSError), bad headers
# (SyntaxError, struct.error), bad chunk contents (ValueError, EOFError, zlib.error).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


@dataclass(frozen=True)
class CheckedImage:
    """A reference image that passed :func:`check_reference_image`.

    ``png_bytes`` is an 8-bit RGB PNG without any metadata; ``width``/``height`` are its
    size (after orientation and downscaling); ``original_format`` is what was uploaded:
    ``"PNG"``, ``"JPEG"``, ``"WEBP"`` or ``"GIF"``.
    """

    png_bytes: bytes
    width: int
    height: int
    original_format: str


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f}".rstrip("0").rstrip(".")


def _looks_like_text(head: bytes) -> bool:
    if b"\0" in head:
        return False
    try:
        # final=False: a multi-byte character cut off at the end of the sample is fine
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f")
    return controls == 0


def sniff_format(data: bytes) -> str | None:
    """Return the accepted Pillow format name ``data`` starts like, or ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    return None


def _refusal_for_other(data: bytes) -> str:
    """A message naming what ``data`` is, for content that is none of the accepted types."""
    head = data[:2048]
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in head.lower() and (
        stripped.startswith((b"<?xml", b"<svg", b"<!doctype svg", b"<!--"))
    ):
        return "That file is an SVG drawing; " + _SEND
    if head.startswith(b"%PDF-"):
        return "That file is a PDF document; " + _SEND
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return "That image is HEIC/HEIF (the iPhone photo format), which I can't read; " + _SEND
        if brand in (b"avif", b"avis"):
            return "That image is AVIF, which I can't read; " + _SEND
        return "That file is a video, not a still image; " + _SEND
    if head.startswith(b"\x1a\x45\xdf\xa3") or (head[:4] == b"RIFF" and head[8:12] == b"AVI "):
        return "That file is a video, not a still image; " + _SEND
    if head.startswith((b"II*\0", b"MM\0*")):
        return "That image is a TIFF file, which I don't accept; " + _SEND
    if head.startswith(b"BM"):
        return "That image is a BMP file, which I don't accept; " + _SEND
    if head.startswith(b"\0\0\1\0"):
        return "That file is an icon (ICO), which I don't accept; " + _SEND
    if head.startswith((b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!")):
        return "That file is an archive, not an image; " + _SEND
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "That file is a web page (HTML), not an image; " + _SEND
    if _looks_like_text(head):
        return "That file is text, not an image; " + _SEND
    return "That file is not an image I can read; " + _SEND


def _too_many_pixels(width: int, height: int, max_pixels: int) -> str:
    size = f" ({width:,} x {height:,} pixels)" if width and height else ""
    return (
        f"That image is too big{size}; the limit is {max_pixels / 1_000_000:g} megapixels. "
        "Please send a smaller one."
    )


def _to_8bit(im: Image.Image) -> Image.Image:
    """Scale 16/32-bit greyscale to 8-bit ``L`` instead of letting Pillow clip it at 255."""
    wide = im if im.mode in ("I", "F") else im.convert("I")
    _, high = wide.getextrema()
    if im.mode.startswith("I;16") or high > 255:
        # 16-bit range: 0..65535 maps to 0..255, rounded; anything above is clipped below
        wide = wide.point(lambda v: v * (1 / 257) + 0.5)
    return wide.convert("L")


def _to_srgb(im: Image.Image) -> Image.Image:
    """Convert pixels from an embedded ICC profile to sRGB; on any trouble keep them as they are.

    The profile is dropped with the other metadata, so without this a Display-P3 photo or a
    CMYK print file would come out with shifted colours.
    """
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "CMYK"):
        return im
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile("sRGB")
        converted = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
    except Exception as exc:  # a broken or exotic profile must not sink a fine image
        log.debug("ignoring ICC profile (%s)", exc)
        return im
    return converted if converted is not None else im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Return an 8-bit RGB image, flattening any transparency onto white."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        im = _to_8bit(im)
    im = _to_srgb(im)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def check_reference_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
) -> CheckedImage:
    """Check ``data`` (an upload) and return it as a clean RGB PNG at most ``max_side`` wide/high.

    Raises :class:`InvalidImage` with a message safe to show the member: empty, over
    ``max_bytes``, not PNG/JPEG/WebP/GIF (the message names what it is), more than
    ``max_pixels`` pixels, or damaged. Blocks for up to a second on big photos: from async
    code use :func:`check_reference_image_async`.
    """
    if not data:
        raise InvalidImage("That file is empty; " + _SEND)
    if len(data) > max_bytes:
        raise InvalidImage(
            f"That image is {_megabytes(len(data))} MB; the limit is {_megabytes(max_bytes)} MB. "
            "Please send a smaller one."
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidImage(_refusal_for_other(data))

    try:
        # formats=[fmt]: only the plugin the magic bytes named may parse it
        im = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError:
        width, height = _header_size(data, fmt)
        raise InvalidImage(_too_many_pixels(width, height, max_pixels)) from None
    except _DECODE_ERRORS as exc:
        log.debug("cannot open %s upload: %s", fmt, exc)
        raise InvalidImage(_DAMAGED) from None

    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise InvalidImage(_DAMAGED)
        if width * height > max_pixels:
            raise InvalidImage(_too_many_pixels(width, height, max_pixels))
        try:
            if fmt == "JPEG":
                # decode at 1/2, 1/4 or 1/8 size straight away when the result is shrunk anyway
                im.draft(None, (max_side, max_side))
            im.load()
        except Image.DecompressionBombError:
            raise InvalidImage(_too_many_pixels(width, height, max_pixels)) from None
        except _DECODE_ERRORS as exc:
            log.debug("cannot decode %s upload: %s", fmt, exc)
            raise InvalidImage(_DAMAGED) from None

        try:
            oriented = ImageOps.exif_transpose(im)
        except Exception as exc:  # broken EXIF: keep the pixels as stored
            log.debug("ignoring EXIF orientation (%s)", exc)
            oriented = im.copy()
        try:
            rgb = _to_rgb(oriented)
        except ValueError as exc:  # a mode Pillow cannot convert
            log.debug("cannot convert %s image: %s", oriented.mode, exc)
            raise InvalidImage("That image uses a colour format I can't read; " + _SEND) from None

        if max(rgb.size) > max_side:
            rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        # a brand-new image from the raw pixels: nothing from the upload's info can leak
        clean = Image.frombytes("RGB", rgb.size, rgb.tobytes())

    out = io.BytesIO()
    clean.save(out, format="PNG", compress_level=6)
    return CheckedImage(
        png_bytes=out.getvalue(),
        width=clean.width,
        height=clean.height,
        original_format=fmt,
    )


def _header_size(data: bytes, fmt: str) -> tuple[int, int]:
    """Best-effort width/height for the message when Pillow refused to open the file."""
    if fmt == "PNG" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if fmt == "GIF" and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    return (0, 0)


async def check_reference_image_async(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
) -> CheckedImage:
    """:func:`check_reference_image` in a worker thread, so the event loop keeps running."""
    return await asyncio.to_thread(
        check_reference_image,
        data,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        max_side=max_side,
    )
