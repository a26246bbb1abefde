"""Reference images: every bad upload gets its own message, every good one comes out clean."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import ExifTags, Image

from bot.errors import InvalidImage
from bot.media.images import (
    CheckedImage,
    check_reference_image,
    check_reference_image_async,
)


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def decode(checked: CheckedImage) -> Image.Image:
    im = Image.open(io.BytesIO(checked.png_bytes))
    im.load()
    return im


def noise(width: int, height: int, seed: int = 1) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def huge_png_header(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` 1-bit pixels, with one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + (width + 7) // 8))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


# --- refused ---------------------------------------------------------------------------


def test_a_text_file_named_png_is_refused_as_text():
    data = b"hello, this is definitely a picture of my cat\n" * 10
    with pytest.raises(InvalidImage, match="text, not an image"):
        check_reference_image(data)


def test_an_empty_file_is_refused():
    with pytest.raises(InvalidImage, match="empty"):
        check_reference_image(b"")


def test_a_truncated_png_is_refused_as_damaged():
    data = encode(noise(200, 200), "PNG")
    with pytest.raises(InvalidImage, match="damaged or incomplete"):
        check_reference_image(data[: len(data) // 2])


def test_a_png_with_a_broken_header_is_refused_as_damaged():
    data = bytearray(encode(noise(20, 20), "PNG"))
    data[12:16] = b"XXXX"  # the IHDR chunk type
    with pytest.raises(InvalidImage, match="damaged or incomplete"):
        check_reference_image(bytes(data))


def test_a_30000_by_30000_png_is_refused_before_decoding():
    data = huge_png_header(30_000, 30_000)
    assert len(data) < 2000
    with pytest.raises(InvalidImage, match="too big") as info:
        check_reference_image(data)
    assert "30,000 x 30,000" in info.value.message


def test_the_pixel_limit_holds_even_with_pillows_own_guard_off(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(InvalidImage, match="30,000 x 30,000"):
        check_reference_image(huge_png_header(30_000, 30_000))


def test_an_image_just_over_the_pixel_limit_is_refused():
    data = encode(noise(101, 100), "PNG")
    with pytest.raises(InvalidImage, match="too big"):
        check_reference_image(data, max_pixels=100 * 100)


def test_a_file_over_the_byte_limit_is_refused_before_anything_else():
    data = b"\x89PNG\r\n\x1a\n" + b"\0" * (8 * 1024 * 1024)
    with pytest.raises(InvalidImage, match="the limit is 8 MB"):
        check_reference_image(data)


def test_the_byte_limit_is_configurable():
    data = encode(noise(64, 64), "PNG")
    with pytest.raises(InvalidImage, match="limit"):
        check_reference_image(data, max_bytes=len(data) - 1)
    assert check_reference_image(data, max_bytes=len(data)).width == 64


def test_an_svg_is_refused_as_a_drawing():
    data = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<rect width="10" height="10" fill="red"/></svg>'
    )
    with pytest.raises(InvalidImage) as info:
        check_reference_image(data)
    assert info.value.message == (
        "That file is an SVG drawing; send a PNG, JPEG, WebP or GIF image."
    )


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF document"),
        (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", "HEIC"),
        (b"\0\0\0\x20ftypisom\0\0\2\0isomiso2avc1mp41", "video"),
        (b"II*\0\x08\0\0\0", "TIFF"),
        (b"BM\x36\0\0\0\0\0\0\0\x36\0\0\0", "BMP"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "web page"),
        (bytes(range(256)) * 4, "not an image I can read"),
    ],
)
def test_other_file_types_are_named_in_the_refusal(data: bytes, words: str):
    with pytest.raises(InvalidImage, match=words):
        check_reference_image(data)


def test_the_file_type_comes_from_the_content_not_the_format_name():
    # a JPEG is accepted whatever it was called, and reported as JPEG
    checked = check_reference_image(encode(noise(30, 20), "JPEG"))
    assert checked.original_format == "JPEG"


# --- accepted and cleaned --------------------------------------------------------------


def test_an_animated_gif_is_accepted_and_its_first_frame_used():
    frames = [Image.new("RGB", (40, 30), colour) for colour in ("red", "lime", "blue")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3

    checked = check_reference_image(data)

    assert checked.original_format == "GIF"
    assert (checked.width, checked.height) == (40, 30)
    out = decode(checked)
    assert out.mode == "RGB"
    assert getattr(out, "n_frames", 1) == 1
    r, g, b = out.getpixel((20, 15))
    assert r > 200 and g < 50 and b < 50


def test_an_animated_webp_is_accepted_and_its_first_frame_used():
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("blue", "red")]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    out = decode(check_reference_image(data))
    r, g, b = out.getpixel((16, 16))
    assert b > 200 and r < 50


def test_a_cmyk_jpeg_is_accepted_and_converted_to_rgb():
    cmyk = Image.new("CMYK", (40, 30), (0, 255, 255, 0))  # full magenta + yellow: red
    checked = check_reference_image(encode(cmyk, "JPEG", quality=95))

    out = decode(checked)
    assert out.mode == "RGB"
    r, g, b = out.getpixel((20, 15))
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied_and_all_exif_and_gps_removed():
    stored = Image.new("RGB", (64, 32), "blue")
    stored.paste((255, 0, 0), (0, 0, 32, 32))  # left half red, as stored
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # "rotate 90 degrees clockwise to display"
    exif[ExifTags.Base.Make] = "PhoneCo"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (13.0, 24.0, 36.0)
    data = encode(stored, "JPEG", exif=exif, quality=95)
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # it is there

    checked = check_reference_image(data)

    assert (checked.width, checked.height) == (32, 64)  # dimensions swapped
    out = decode(checked)
    top, bottom = out.getpixel((16, 10)), out.getpixel((16, 54))
    assert top[0] > 200 and top[2] < 60  # the stored left half is now on top
    assert bottom[2] > 200 and bottom[0] < 60
    assert len(out.getexif()) == 0
    assert not out.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert "exif" not in out.info
    assert b"Exif" not in checked.png_bytes and b"eXIf" not in checked.png_bytes
    assert b"PhoneCo" not in checked.png_bytes


def test_png_text_chunks_and_icc_profiles_are_not_kept():
    from PIL import ImageCms, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret location: my house")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(noise(20, 20), "PNG", pnginfo=info, icc_profile=icc)

    checked = check_reference_image(data)

    assert b"secret" not in checked.png_bytes
    assert b"iCCP" not in checked.png_bytes and b"tEXt" not in checked.png_bytes
    assert decode(checked).info == {}


def test_a_16_bit_png_is_scaled_to_8_bit_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")

    out = np.asarray(decode(check_reference_image(data)))
    assert out.shape == (16, 64, 3)
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255
    assert 120 <= out[0, 32, 0] <= 135  # the middle stays grey, not white


def test_a_palette_png_with_transparency_is_flattened_onto_white():
    im = Image.new("P", (20, 10), 0)
    im.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    im.paste(1, (10, 0, 20, 10))  # right half: index 1, blue
    data = encode(im, "PNG", transparency=0)  # index 0 (left half, red) is transparent

    out = decode(check_reference_image(data))

    assert out.mode == "RGB"
    assert out.getpixel((5, 5)) == (255, 255, 255)
    assert out.getpixel((15, 5)) == (0, 0, 255)


def test_rgba_is_flattened_onto_white():
    im = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    im.paste((0, 128, 0, 255), (0, 0, 5, 10))
    out = decode(check_reference_image(encode(im, "PNG")))
    assert out.getpixel((8, 5)) == (255, 255, 255)
    assert out.getpixel((2, 5)) == (0, 128, 0)


def test_greyscale_with_alpha_becomes_rgb():
    im = Image.new("LA", (10, 10), (100, 255))
    out = decode(check_reference_image(encode(im, "PNG")))
    assert out.mode == "RGB" and out.getpixel((5, 5)) == (100, 100, 100)


def test_a_large_image_is_shrunk_so_its_longest_side_fits():
    checked = check_reference_image(encode(noise(300, 100), "PNG"), max_side=120)
    assert (checked.width, checked.height) == (120, 40)
    assert decode(checked).size == (120, 40)


def test_a_large_jpeg_is_shrunk_too():
    checked = check_reference_image(encode(noise(200, 400), "JPEG"), max_side=50)
    assert (checked.width, checked.height) == (25, 50)


def test_a_small_image_keeps_its_size():
    checked = check_reference_image(encode(noise(30, 20), "WEBP", lossless=True))
    assert (checked.width, checked.height, checked.original_format) == (30, 20, "WEBP")


async def test_the_async_check_gives_the_same_result():
    data = encode(noise(30, 20), "PNG")
    assert await check_reference_image_async(data) == check_reference_image(data)
    with pytest.raises(InvalidImage, match="too big"):
        await check_reference_image_async(huge_png_header(30_000, 30_000))
