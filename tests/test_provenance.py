"""Generated faces carry a small visible "AI-generated" mark and PNG text chunks saying so."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from voiceface import provenance
from voiceface.cli import main as cli_main
from voiceface.pipeline import VoiceFace
from voiceface.provenance import is_marked, mark, save_png


def face_like(size: int, level: int) -> Image.Image:
    """A flat image of grey `level` with a little texture (the mark must read on any face)."""
    rng = np.random.default_rng(size)
    pixels = np.clip(level + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("size", [256, 1024])
@pytest.mark.parametrize("level", [15, 128, 245], ids=["dark", "grey", "white"])
def test_mark_is_small_legible_and_in_the_bottom_right_corner(size, level):
    image = face_like(size, level)
    marked = np.asarray(mark(image)).astype(int)
    changed = np.any(marked != np.asarray(image), axis=2)
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    assert rows.min() > 0.85 * size and cols.min() > 0.6 * size  # bottom-right corner only
    assert changed.sum() < 0.03 * size * size  # unobtrusive
    box = marked[rows.min():rows.max() + 1, cols.min():cols.max() + 1].mean(axis=2)
    text_rows = np.flatnonzero((box > 200).sum(axis=1) > 0)  # white glyph pixels
    assert len(text_rows) >= max(provenance.MIN_FONT_PX - 3, 0.02 * size)  # glyph height
    assert np.percentile(box, 10) < 100  # on a dark backing, whatever the face behind it


def test_full_label_at_256_and_short_label_on_thumbnails():
    font = provenance._font(provenance.MIN_FONT_PX)
    assert font.getlength(provenance.LABEL) <= provenance.MAX_LABEL_FRACTION * 256
    tiny = face_like(16, 128)
    assert np.array_equal(np.asarray(mark(tiny)), np.asarray(tiny))  # too small to letter
    assert is_marked(mark(tiny))  # but the metadata is there


def test_png_text_chunks_to_a_file_and_a_buffer(tmp_path):
    face = mark(face_like(64, 100))
    save_png(face, tmp_path / "face.png")
    buf = io.BytesIO()
    save_png(face, buf)
    for source in (tmp_path / "face.png", io.BytesIO(buf.getvalue())):
        saved = Image.open(source)
        assert saved.format == "PNG" and is_marked(saved)
        assert saved.text["ai-generated"] == "true" and "AI-generated" in saved.text["Description"]
    assert not is_marked(Image.open(io.BytesIO(_plain_png(face_like(64, 100)))))


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_jpeg_and_webp_carry_the_provenance_in_exif(fmt):
    face = mark(face_like(64, 100))
    buf = io.BytesIO()
    face.save(buf, fmt, exif=face.info["exif"])  # as Gradio saves what the page shows
    saved = Image.open(io.BytesIO(buf.getvalue()))
    assert saved.format == fmt and is_marked(saved)
    assert "AI-generated" in saved.getexif()[provenance.EXIF_DESCRIPTION]
    plain = io.BytesIO()
    face_like(64, 100).save(plain, fmt)
    assert not is_marked(Image.open(plain))


def _plain_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_pipeline_faces_and_cli_pngs_are_marked(dev_bundle, tmp_path, capsys):
    vf = VoiceFace.from_pretrained(dev_bundle)
    result = vf(dev_bundle / "voices" / "dev02.flac")
    assert is_marked(result.face)
    out = tmp_path / "face.png"
    assert cli_main(["predict", str(dev_bundle / "voices" / "dev02.flac"), "--bundle",
                     str(dev_bundle), "--out", str(out)]) == 0
    assert is_marked(Image.open(out))
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(result.face))
