"""voiceface.faces: loading photos, refusing bad ones clearly, finding and aligning one face.

The real photo is voiceface/data/astronaut.jpg (public domain; see the README there).
Aligned outputs are checked independently: the face and eyes are found again in the output.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from voiceface.faces import (
    MAX_IMAGE_PIXELS,
    MIN_IMAGE_SIDE,
    WORK_MAX_PIXELS,
    Box,
    FaceError,
    align,
    align_face,
    detect_faces,
    find_eyes,
    load_image,
    photo_format,
)

PHOTO = Path(__file__).parents[1] / "voiceface" / "data" / "astronaut.jpg"
SIZE = 256  # px; small outputs keep the tests fast


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return load_image(PHOTO)


def eye_line(aligned: Image.Image) -> tuple[float, float]:
    """(tilt in degrees, eye height as a fraction of the side) measured on an aligned face."""
    boxes = detect_faces(aligned)
    assert len(boxes) == 1
    eyes, detected = find_eyes(aligned, boxes[0])
    assert detected
    (xl, yl), (xr, yr) = eyes
    return math.degrees(math.atan2(yr - yl, xr - xl)), (yl + yr) / 2 / aligned.height


def png_header(width: int, height: int) -> bytes:
    """A small PNG file that declares width x height (its pixel data is one row)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + \
        chunk(b"IDAT", zlib.compress(bytes(1 + 3 * width))) + chunk(b"IEND", b"")


def jpeg_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


# ------------------------------------------------------------------------- alignment


def test_one_face_aligned_with_level_eyes_at_ffhq_height(photo):
    result = align(PHOTO, size=SIZE)
    assert result.image.size == (SIZE, SIZE) and result.image.mode == "RGB"
    assert result.eyes_detected
    x, y, w, h = result.box
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 180  # the face in the 512 px photo
    tilt, height = eye_line(result.image)
    assert abs(tilt) < 3
    assert 0.40 < height < 0.52  # FFHQ puts the eyes just above the middle (~0.47)


def test_align_face_returns_the_image(photo):
    image = align_face(photo, size=128)
    assert isinstance(image, Image.Image) and image.size == (128, 128)


@pytest.mark.parametrize("degrees", [10, -10])
def test_rotated_photo_comes_out_level(photo, degrees):
    rotated = photo.rotate(degrees, Image.Resampling.BICUBIC, expand=True,
                           fillcolor=(128, 128, 128))
    result = align(rotated, size=SIZE)
    assert result.eyes_detected
    assert abs(result.tilt - align(photo, SIZE).tilt + degrees) < 3  # tilt seen in the photo
    tilt, _ = eye_line(result.image)
    assert abs(tilt) < 3


@pytest.mark.parametrize("variant", ["mirrored", "recoloured", "grey", "bright"])
def test_variants_of_the_photo_are_still_one_face(photo, variant):
    pixels = np.asarray(photo).astype(np.float32)
    if variant == "mirrored":
        image = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    elif variant == "recoloured":
        image = Image.fromarray(np.clip(pixels[..., [2, 0, 1]] * 0.9 + 10, 0, 255)
                                .astype(np.uint8))
    elif variant == "grey":
        image = photo.convert("L")
    else:
        image = Image.fromarray(np.clip(pixels * 1.3 + 20, 0, 255).astype(np.uint8))
    result = align(image, size=SIZE)
    assert result.eyes_detected and result.image.size == (SIZE, SIZE)


def test_two_people_are_refused_with_the_count(photo):
    pair = Image.new("RGB", (photo.width * 2, photo.height))
    pair.paste(photo, (0, 0))
    pair.paste(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (photo.width, 0))
    assert len(detect_faces(pair)) == 2
    with pytest.raises(FaceError, match=r"Found 2 faces in pair\.png; use a photo of one person"):
        align(pair, name="pair.png")


@pytest.mark.parametrize("kind", ["gradient", "noise"])
def test_no_face_is_refused(kind):
    rng = np.random.default_rng(0)
    if kind == "gradient":
        ramp = np.linspace(0, 255, 400, dtype=np.float32)
        pixels = np.stack([ramp[None, :] + 0 * ramp[:, None], ramp[:, None] + 0 * ramp[None, :],
                           np.full((400, 400), 128.0)], axis=-1).astype(np.uint8)
    else:
        pixels = rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)
    assert detect_faces(pixels) == []
    with pytest.raises(FaceError, match=f"No face found in {kind}.png"):
        align(pixels, name=f"{kind}.png")


def test_face_at_the_edge_is_padded_without_seams(photo):
    # crop so the face nearly touches the top-left corner: the FFHQ square leaves the photo
    corner = photo.crop((150, 40, 512, 512))
    result = align(corner, size=SIZE)
    pixels = np.asarray(result.image).astype(np.float32)
    assert result.image.size == (SIZE, SIZE)
    assert pixels[:8].std() > 1  # reflected and blurred, not a flat fill
    assert np.abs(np.diff(pixels, axis=1)).mean() < 20  # no hard seam


def test_large_photo_is_detected_at_its_own_scale(photo):
    big = photo.resize((2048, 2048), Image.Resampling.BICUBIC)
    (box,) = detect_faces(big)
    assert isinstance(box, Box) and 300 < box.w < 480  # ~4x the 95 px face of the original
    result = align(big, size=128)  # the crop is ~5x the output: shrunk first, then warped
    assert result.image.size == (128, 128)
    assert abs(eye_line(result.image.resize((SIZE, SIZE)))[0]) < 3


# ------------------------------------------------------------------------- bad input


def test_load_accepts_path_bytes_pil_and_array(photo):
    for source in (PHOTO, str(PHOTO), PHOTO.read_bytes(), photo, np.asarray(photo)):
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (512, 512)


def test_exif_orientation_is_applied(photo):
    wide = photo.crop((0, 0, 512, 300))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    wide.save(buf, "JPEG", exif=exif)
    assert load_image(buf.getvalue()).size == (300, 512)


def test_transparent_png_goes_on_white():
    rgba = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    assert load_image(buf.getvalue()).getpixel((50, 50)) == (255, 255, 255)


def test_empty_file(tmp_path):
    empty = tmp_path / "face.jpg"
    empty.write_bytes(b"")
    with pytest.raises(FaceError, match=r"face\.jpg is empty \(0 bytes\)"):
        load_image(empty)


def test_missing_file(tmp_path):
    with pytest.raises(FaceError, match="Photo not found"):
        load_image(tmp_path / "nobody.jpg")


def test_truncated_jpeg(photo):
    data = jpeg_bytes(photo)
    with pytest.raises(FaceError, match="damaged or truncated"):
        load_image(data[: len(data) // 2])


def test_not_an_image():
    with pytest.raises(FaceError, match="not an image that can be read"):
        load_image(b"Dear diary, today I uploaded a text file instead of a photo." * 10)


# Issue 28: Pillow alone opens EPS and PostScript by running Ghostscript (this loop held it
# at full CPU for 20 s), and a dozen formats README never promised.
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 200 200\n%%EndComments\n"
       b"0 1 1200000000 { pop } for\nshowpage\n%%EOF\n")
POSTSCRIPT = b"%!PS-Adobe-3.0\n%%Pages: 1\n%%EndComments\n{} loop\nshowpage\n%%EOF\n"
WRITTEN_BY_PILLOW = ["TIFF", "BMP", "TGA", "PCX", "SGI", "PPM", "QOI", "DDS", "IM", "SPIDER",
                     "GIF", "ICO", "JPEG2000", "EPS"]


def foreign_photo(kind: str, photo: Image.Image) -> bytes:
    """The astronaut saved as `kind` by Pillow, or the crafted EPS and PostScript files."""
    if kind in ("crafted EPS", "crafted PostScript"):
        return EPS if kind == "crafted EPS" else POSTSCRIPT
    buf = io.BytesIO()
    photo.convert("F" if kind == "SPIDER" else "RGB").save(buf, kind)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["crafted EPS", "crafted PostScript", *WRITTEN_BY_PILLOW])
def test_only_jpeg_png_and_webp_reach_a_decoder(kind, photo, monkeypatch):
    data = foreign_photo(kind, photo)
    if kind in WRITTEN_BY_PILLOW and kind != "EPS":  # Pillow alone decodes it (EPS: with gs)
        Image.open(io.BytesIO(data)).load()

    def no_decoder(*args, **kwargs):
        raise AssertionError("a decoder was given the file")

    monkeypatch.setattr(Image, "open", no_decoder)
    with pytest.raises(FaceError, match=r"not an image that can be read; use a JPEG, PNG "
                                        r"or WebP photo") as refused:
        load_image(data, name="face")
    assert refused.value.reason == "photo_not_image"


@pytest.mark.parametrize("kind", ["JPEG", "PNG", "WEBP"])
def test_each_promised_format_is_opened_by_its_own_decoder_only(kind, photo):
    buf = io.BytesIO()
    photo.save(buf, kind)
    assert photo_format(buf.getvalue()) == kind
    assert load_image(buf.getvalue()).size == photo.size


def test_a_promised_signature_in_front_of_another_format_is_not_decoded_as_it(photo):
    """An EPS behind a PNG signature goes to the PNG decoder only, which refuses it."""
    with pytest.raises(FaceError) as refused:
        load_image(b"\x89PNG\r\n\x1a\n" + EPS)
    assert refused.value.reason in ("photo_not_image", "photo_damaged")


@pytest.mark.parametrize("header", [b"RIFF\x24\x00\x00\x00WAVEfmt ", b"fLaC\x00\x00\x00\x22",
                                    b"OggS\x00\x02", b"ID3\x04\x00\x00"])
def test_audio_file_given_as_photo(header):
    with pytest.raises(FaceError, match="looks like an audio file.*not a photo"):
        load_image(header + bytes(1000), name="voice")


def test_webp_is_not_mistaken_for_wav(photo):
    buf = io.BytesIO()
    photo.save(buf, "WEBP")
    assert buf.getvalue()[:4] == b"RIFF"
    assert load_image(buf.getvalue()).size == (512, 512)


@pytest.mark.parametrize("side", [12_000, 20_000])
def test_too_many_pixels_refused_before_decoding(side, monkeypatch):
    # 20000^2 also trips PIL's own DecompressionBombError, which must not surface raw
    assert side * side > MAX_IMAGE_PIXELS

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(FaceError, match=r"huge\.png is .*megapixels.*Resize it"):
        load_image(png_header(side, side), name="huge.png")


def big_photo(photo: Image.Image, side: int, mode: str = "RGB") -> Image.Image:
    """A side x side canvas (transparent for RGBA, else white) with the face in the middle."""
    canvas = Image.new(mode, (side, side), (255, 255, 255, 0) if mode == "RGBA" else "white")
    canvas.paste(photo.convert(mode), ((side - photo.width) // 2,) * 2)
    return canvas


@pytest.mark.parametrize("kind", ["JPEG", "PNG"])
def test_a_photo_over_the_working_size_is_reduced_as_it_is_read(kind, photo):
    side = 6000  # 36 MP: reduced by 2 (JPEG: decoded at half scale)
    assert side * side > WORK_MAX_PIXELS >= (side // 2) ** 2
    buf = io.BytesIO()
    big_photo(photo, side, "RGBA" if kind == "PNG" else "RGB").save(buf, kind)
    image = load_image(buf.getvalue())
    assert image.size == (side // 2, side // 2) and image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)  # transparent went on white
    middle = image.crop((side // 4 - 128, side // 4 - 128, side // 4 + 128, side // 4 + 128))
    expected = photo.resize((256, 256), Image.Resampling.BOX)
    assert np.abs(np.asarray(middle, float) - np.asarray(expected, float)).mean() < 4


def test_a_reduced_photo_keeps_its_orientation(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    big_photo(photo, 6000).crop((0, 0, 6000, 3600)).save(buf, "JPEG", exif=exif)
    assert load_image(buf.getvalue()).size == (1800, 3000)


def test_too_small():
    with pytest.raises(FaceError, match=r"only 50 x 40 px; use a photo at least 64 px"):
        load_image(Image.new("RGB", (50, 40)))


def test_wrong_type():
    with pytest.raises(FaceError, match="Cannot read a photo from a int"):
        load_image(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [(MIN_IMAGE_SIDE - 1, 500), (500, MIN_IMAGE_SIDE - 1)])
def test_a_photo_with_one_side_too_short_is_refused(size):
    """Either side alone below the limit refuses the photo, as an image and as a file."""
    image = Image.new("RGB", size)
    for source in (image, jpeg_bytes(image)):
        with pytest.raises(FaceError, match=rf"only {size[0]} x {size[1]} px") as caught:
            load_image(source)
        assert caught.value.reason == "photo_too_small"


@pytest.mark.parametrize("size", [(MIN_IMAGE_SIDE, 500), (500, MIN_IMAGE_SIDE),
                                  (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)])
def test_a_photo_exactly_at_the_side_limit_is_accepted(size):
    image = Image.new("RGB", size)
    for source in (image, jpeg_bytes(image)):
        assert load_image(source).size == size
