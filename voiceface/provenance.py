"""Generated faces say that they are generated: a small visible mark and metadata.

    face = mark(face)           # "AI-generated" in the bottom-right corner; metadata in .info
    save_png(face, "face.png")  # PNG with Software / Description / ai-generated text chunks

The text chunks travel in `image.info`, which Gradio copies into the PNGs it serves; the same
words travel as EXIF (Software, ImageDescription) in `image.info["exif"]`, which Gradio and
Pillow write into the JPEG and WebP files the page shows.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import BinaryIO

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

LABEL = "AI-generated"
SHORT_LABEL = "AI"  # when the full label would cover too much of a small image
METADATA = {
    "Software": "voiceface",
    "Description": "AI-generated face: drawn by StyleGAN2 from a voice embedding. Not a "
                   "photograph, and not a likeness of the speaker.",
    "ai-generated": "true",
}
EXIF_SOFTWARE, EXIF_DESCRIPTION = 0x0131, 0x010E  # EXIF tag numbers (TIFF 6.0 baseline)
EXIF_TEXT = f"{METADATA['Description']} ai-generated: {METADATA['ai-generated']}"  # ASCII
FONT_FRACTION = 0.03  # label height as a fraction of the image width (31 px at 1024 px)
MIN_FONT_PX = 10  # smaller text is not legible
MAX_LABEL_FRACTION = 0.45  # of the width; a longer label shrinks to SHORT_LABEL
MIN_MARKED_PX = 48  # images narrower than this (tiny previews) carry only the metadata
PAD_FRACTION = 0.35  # of the font size, around the text inside its backing box
BOX_RGBA = (0, 0, 0, 150)  # translucent dark backing: legible on any face, hides little
TEXT_RGBA = (255, 255, 255, 235)


def mark(image: Image.Image) -> Image.Image:
    """A copy of `image` with a small "AI-generated" label in the bottom-right corner and the
    provenance text in `.info` (written as PNG text chunks by `save_png` and by Gradio)."""
    out = image.convert("RGB")
    width, height = out.size
    if min(width, height) >= MIN_MARKED_PX:
        size = max(MIN_FONT_PX, round(FONT_FRACTION * width))
        font = _font(size)
        label = LABEL if font.getlength(LABEL) <= MAX_LABEL_FRACTION * width else SHORT_LABEL
        left, top, right, bottom = font.getbbox(label)
        pad = max(2, round(PAD_FRACTION * size))
        x1, y1 = width - pad, height - pad  # the box's outer corner, inset from the edge
        x0, y0 = x1 - (right - left) - 2 * pad, y1 - (bottom - top) - 2 * pad
        overlay = Image.new("RGBA", out.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        draw.rounded_rectangle((x0, y0, x1, y1), radius=pad, fill=BOX_RGBA)
        draw.text((x0 + pad - left, y0 + pad - top), label, font=font, fill=TEXT_RGBA)
        out = Image.alpha_composite(out.convert("RGBA"), overlay).convert("RGB")
    out.info.update(METADATA)
    out.info["exif"] = _exif()
    return out


def is_marked(image: Image.Image) -> bool:
    """True when the image (e.g. a PNG, JPEG or WebP read back) carries the provenance: PNG
    text chunks, or the EXIF Software and ImageDescription tags."""
    info = getattr(image, "text", None) or image.info
    if all(info.get(k) == v for k, v in METADATA.items()):
        return True
    exif = image.getexif()
    return (exif.get(EXIF_SOFTWARE) == METADATA["Software"]
            and exif.get(EXIF_DESCRIPTION) == EXIF_TEXT)


def png_info(image: Image.Image) -> PngImagePlugin.PngInfo:
    """The PNG text chunks for `image`: its own string metadata plus the provenance text."""
    info = PngImagePlugin.PngInfo()
    for key, value in {**image.info, **METADATA}.items():
        if isinstance(key, str) and isinstance(value, str):
            info.add_text(key, value)
    return info


def save_png(image: Image.Image, target: str | os.PathLike | BinaryIO) -> None:
    """Save a generated image as PNG with the provenance text chunks."""
    image.save(target, format="PNG", pnginfo=png_info(image))


@lru_cache(maxsize=1)
def _exif() -> bytes:
    exif = Image.Exif()
    exif[EXIF_SOFTWARE] = METADATA["Software"]
    exif[EXIF_DESCRIPTION] = EXIF_TEXT
    return exif.tobytes()


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)
