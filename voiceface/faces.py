"""Face photos in: load any photo a person supplies, find the one face, align it like FFHQ.

    face = align_face("people/ada/face.jpg", size=1024)      # PIL RGB, 1024 x 1024
    report = align("people/ada/face.jpg")                    # + box, eyes, tilt

`load_image` accepts a path, raw bytes, a PIL image or an RGB array and returns an RGB PIL
image with its EXIF orientation applied. Files are decoded only as JPEG, PNG or WebP, told
from their first bytes before any decoder runs. Anything unusable (empty, damaged, not an image,
an audio file, too large, too small, no face, several faces) raises `FaceError` (a
`ValueError`) whose message says what was wrong and what to do.

Faces are found with the Haar cascades that ship inside `opencv-python-headless` 4.x (no
downloads), eyes with the eye cascade inside the upper half of the face box; when the eyes
are not found the box alone places them. The crop follows the FFHQ alignment procedure
(Karras et al. 2019, dataset recreation script): eyes level, the crop side set by the
eye-to-eye and eye-to-mouth distances, centred just below the eyes.
"""

from __future__ import annotations

import io
import math
import os
import struct
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .memory import release_freed_memory

MAX_FILE_BYTES = 50 * 1024 * 1024  # bytes; a 50 MP JPEG at high quality is ~25 MB
MAX_IMAGE_PIXELS = 40_000_000  # px (width x height); larger photos are refused before decoding
MIN_IMAGE_SIDE = 64  # px; the shorter side of a usable photo
# px; larger photo files are box-reduced by a whole factor to this or under as they are read
# (JPEG: decoded at 1/2, 1/4 or 1/8 scale). A 12 MP phone photo is kept whole.
WORK_MAX_PIXELS = 4096 * 4096
# px; after aligning a photo this large the freed memory is given back to the system (its
# copies take 100 MB and more, which glibc would keep: a 40 MP RGBA PNG once left 700 MB)
RELEASE_AFTER_PIXELS = 4_000_000
DETECT_MAX_SIDE = 800  # px; photos are downscaled to this longer side for detection
MIN_FACE_SIDE = 60  # px in the detection image; smaller detections are noise
FACE_SCALE_STEP = 1.1  # Haar pyramid scale factor
FACE_MIN_NEIGHBORS = 5  # Haar detections merged into one face (higher: fewer false faces)
EYE_WORK_SIDE = 256  # px; the face box is resized to this width before eye detection
EYE_MIN_NEIGHBORS = 5
EYE_SIZE_RANGE = (0.10, 0.40)  # eye box side as a fraction of the face box side
EYE_GAP_RANGE = (0.25, 0.70)  # eye-to-eye distance as a fraction of the face box side
MAX_EYE_TILT = 30.0  # degrees; steeper eye pairs are false detections
# Where the frontal-face cascade's box puts the features (fractions of its side; measured on
# frontal portraits, approximate): eye centres, and the mouth centre below the eyes.
BOX_EYE_X = (0.29, 0.71)
BOX_EYE_Y = 0.37
BOX_MOUTH_Y = 0.80
# FFHQ alignment geometry: crop half-side = max(2 * eye-to-eye, 1.8 * eye-to-mouth) / 2 ...
FFHQ_EYE_SCALE = 2.0
FFHQ_MOUTH_SCALE = 1.8
FFHQ_CENTRE_SHIFT = 0.1  # ... centred this fraction of eye-to-mouth below the eye midpoint
PAD_BLUR = 0.02  # Gaussian sigma of the blur over padded regions, fraction of the crop side
PAD_FADE = 0.10  # distance over which padding fades from reflection to blur, same unit
DEFAULT_SIZE = 1024  # px; FFHQ and the config-f generator
DISPLAY_SIZE = 512  # px of the aligned photo the app shows for a person
DISPLAY_QUALITY = 92  # its JPEG quality

ImageSource = str | os.PathLike | bytes | bytearray | Image.Image | np.ndarray

# Leading bytes of audio files: the commonest mix-up is a voice recording given as the face.
_AUDIO_MAGIC = {b"RIFF": "WAV", b"fLaC": "FLAC", b"OggS": "OGG/Opus", b"ID3": "MP3",
                b"\xff\xfb": "MP3", b"\xff\xf3": "MP3", b"\x1a\x45\xdf\xa3": "WebM"}
# The only formats decoded (Pillow's names), told from the leading bytes before any decoder
# runs: Pillow alone would also open EPS and PostScript by running Ghostscript, and TIFF,
# BMP, TGA and a dozen more formats nobody needs for a face photo.
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP")
_PHOTO_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}  # WebP: RIFF....WEBP
_IMAGE_FORMATS = "JPEG, PNG or WebP"


class FaceError(InputError):
    """The photo cannot be used as a face; the message says why and what to do (and
    `reason`, for the problems of a person's own photo)."""


class Box(NamedTuple):
    """A face box in image pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class AlignedFace:
    """An aligned face and how it was found.

    image: the square RGB crop; box: the face box in the photo as loaded (a file over
    `WORK_MAX_PIXELS` is reduced as it is read: see `load_image`); eyes: the eye centres
    (left, right in the photo, x/y px) used for alignment; eyes_detected: False when the eye
    cascade failed and the eyes were placed from the box; tilt: degrees the photo's eye line
    was rotated by (positive = the right eye lower).
    """

    image: Image.Image
    box: Box
    eyes: tuple[tuple[float, float], tuple[float, float]]
    eyes_detected: bool
    tilt: float


def load_image(source: ImageSource, name: str | None = None) -> Image.Image:
    """Decode `source` into an RGB PIL image, EXIF orientation applied.

    `source`: a path, the file's bytes, a PIL image or an RGB/grey uint8 array [H, W(, C)].
    A path's or bytes' format must be one of `PHOTO_FORMATS`, told from the first bytes (no
    other decoder ever sees them), and one over `WORK_MAX_PIXELS` is box-reduced by a whole
    factor as it is read; a PIL image is used as the caller opened it. Transparent pixels
    are composited on white. Raises `FaceError` for an empty, damaged, too large or too
    small image, or for something that is not an image at all.
    """
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise FaceError(f"An image array must be uint8 [H, W] or [H, W, 3|4], got "
                            f"{source.dtype} {list(source.shape)}.")
        source = Image.fromarray(source)
    if isinstance(source, Image.Image):
        name = name or "The photo"
        _check_pixels(*source.size, name)
        return _finish(source, name)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = name or path.name
        if not path.is_file():
            raise FaceError(f"Photo not found: {path}. Check the path.")
        _check_bytes(path.stat().st_size, name)
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), name or "The photo"
    else:
        raise FaceError(f"Cannot read a photo from a {type(source).__name__}; pass a file path, "
                        "the file's bytes or a PIL image.")
    _check_bytes(len(data), name)
    for magic, kind in _AUDIO_MAGIC.items():
        if data.startswith(magic) and (magic != b"RIFF" or data[8:12] != b"WEBP"):
            raise FaceError(f"{name} looks like an audio file ({kind}), not a photo. Give a "
                            f"face photo ({_IMAGE_FORMATS}) here and the recording as the voice.",
                            "photo_is_audio")
    kind = photo_format(data)
    if kind is None:
        raise FaceError(f"{name} is not an image that can be read; use a {_IMAGE_FORMATS} "
                        "photo.", "photo_not_image")
    try:
        with warnings.catch_warnings():  # our own limit below is stricter and says so clearly
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # the header only (pixels come later), by the one decoder its first bytes name
            image = Image.open(io.BytesIO(data), formats=[kind])
            factor = _reduction(*image.size)
            if kind == "JPEG" and factor > 1:  # decoded reduced: never held at full size
                image.draft(None, (image.width // factor, image.height // factor))
    except Image.DecompressionBombError:
        raise FaceError(f"{name} is far too large (over {Image.MAX_IMAGE_PIXELS * 2 / 1e6:.0f} "
                        f"megapixels); the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels. "
                        "Resize it before uploading.", "photo_too_many_pixels",
                        limit_megapixels=MAX_IMAGE_PIXELS / 1e6) from None
    except UnidentifiedImageError:
        raise FaceError(f"{name} is not an image that can be read; use a {_IMAGE_FORMATS} "
                        "photo.", "photo_not_image") from None
    _check_pixels(*image.size, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except (OSError, SyntaxError, ValueError, struct.error) as err:
        raise FaceError(f"{name} is damaged or truncated ({err}); the photo could not be "
                        f"decoded. Export or download it again as {_IMAGE_FORMATS}.",
                        "photo_damaged") from None
    if _reduction(*image.size) > 1:
        image = _reduce(image)
    return _finish(image, name)


def photo_format(data: bytes) -> str | None:
    """The format `data` starts like (one of `PHOTO_FORMATS`), or None: the file's first
    bytes only, so nothing else is ever handed to a decoder."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((kind for magic, kind in _PHOTO_MAGIC.items() if data.startswith(magic)), None)


def _check_bytes(size: int, name: str) -> None:
    if size == 0:
        raise FaceError(f"{name} is empty (0 bytes). Choose the photo again.", "photo_empty")
    if size > MAX_FILE_BYTES:
        raise FaceError(f"{name} is {size / 2**20:.0f} MB; the limit is "
                        f"{MAX_FILE_BYTES / 2**20:.0f} MB. Save it as a JPEG or resize it.",
                        "photo_too_large", megabytes=size / 2**20,
                        limit_megabytes=MAX_FILE_BYTES / 2**20)


def _check_pixels(width: int, height: int, name: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise FaceError(f"{name} is {width} x {height} px ({width * height / 1e6:.0f} "
                        f"megapixels); the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels. "
                        "Resize it (2000 px on the longer side is plenty).",
                        "photo_too_many_pixels", limit_megapixels=MAX_IMAGE_PIXELS / 1e6)
    if min(width, height) < MIN_IMAGE_SIDE:
        raise FaceError(f"{name} is only {width} x {height} px; use a photo at least "
                        f"{MIN_IMAGE_SIDE} px on each side (a face of 256 px or more works best).",
                        "photo_too_small", width=width, height=height, min_side=MIN_IMAGE_SIDE)


def _reduction(width: int, height: int) -> int:
    """The smallest whole factor that brings width x height to `WORK_MAX_PIXELS` or under."""
    return max(1, math.ceil(math.sqrt(width * height / WORK_MAX_PIXELS)))


def _reduce(image: Image.Image) -> Image.Image:
    """`image` box-averaged by `_reduction`, its transparency kept (as RGBA) and its EXIF."""
    if image.mode not in ("L", "RGB", "RGBA") or "transparency" in image.info:
        image = image.convert("RGBA" if _transparent(image) else "RGB")
    return image.reduce(_reduction(*image.size))


def _transparent(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def _finish(image: Image.Image, name: str) -> Image.Image:
    """Orientation from EXIF, alpha on white, RGB."""
    try:
        if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, struct.error, TypeError):
        pass  # a broken EXIF block is not worth refusing the photo for
    if _transparent(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    _check_pixels(*image.size, name)  # exif_transpose can swap the sides
    return image


# -------------------------------------------------------------------------- detection


_loaded = threading.local()  # per thread: detectMultiScale is not documented as thread-safe


def _cascade(filename: str) -> cv2.CascadeClassifier:
    """OpenCV's Haar cascade `filename`, loaded once per thread (loading parses its XML file)."""
    cascades = _loaded.__dict__.setdefault("cascades", {})
    if filename not in cascades:
        cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, filename))
        if cascade.empty():
            raise RuntimeError(f"OpenCV's {filename} is missing; reinstall "
                               "opencv-python-headless<5.")
        cascades[filename] = cascade
    return cascades[filename]


def _grey(image: Image.Image) -> np.ndarray:
    return cv2.equalizeHist(np.asarray(image.convert("L")))


def detect_faces(image: ImageSource) -> list[Box]:
    """Frontal faces in the photo, largest first, as boxes in its pixel coordinates.

    Photos larger than `DETECT_MAX_SIDE` are downscaled for the search (the cascade needs
    no more detail, and its time grows with the pixel count); boxes are scaled back. When
    several boxes are found, those without a pair of eyes are dropped if any has one: the
    cascade's false faces (shoulders, clothing folds) rarely have eyes where eyes belong.
    """
    image = load_image(image)
    scale = min(1.0, DETECT_MAX_SIDE / max(image.size))
    small = image if scale == 1.0 else image.resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.BOX)
    found = _cascade("haarcascade_frontalface_default.xml").detectMultiScale(
        _grey(small), FACE_SCALE_STEP, FACE_MIN_NEIGHBORS, minSize=(MIN_FACE_SIDE, MIN_FACE_SIDE))
    boxes = [Box(*(round(v / scale) for v in box)) for box in np.asarray(found).reshape(-1, 4)]
    if len(boxes) > 1:
        boxes = [box for box in boxes if find_eyes(image, box)[1]] or boxes
    return sorted(boxes, key=lambda b: b.w * b.h, reverse=True)


def find_eyes(image: ImageSource, box: Box) -> tuple[np.ndarray, bool]:
    """Eye centres [2, 2] (x, y px; left then right in the photo) for a face `box`, and whether
    the eye cascade found them (False: placed from the box at `BOX_EYE_X`, `BOX_EYE_Y`)."""
    image = load_image(image)
    scale = EYE_WORK_SIDE / box.w
    face = image.crop((box.x, box.y, box.x + box.w, box.y + box.h // 2))
    face = face.resize((EYE_WORK_SIDE, max(1, round(face.height * scale))),
                       Image.Resampling.LANCZOS)
    lo, hi = (round(f * EYE_WORK_SIDE) for f in EYE_SIZE_RANGE)
    found = np.asarray(_cascade("haarcascade_eye.xml").detectMultiScale(
        _grey(face), FACE_SCALE_STEP, EYE_MIN_NEIGHBORS, minSize=(lo, lo), maxSize=(hi, hi)))
    centres = [(x + w / 2, y + h / 2) for x, y, w, h in found.reshape(-1, 4) / EYE_WORK_SIDE]
    expected = np.array([[BOX_EYE_X[0], BOX_EYE_Y], [BOX_EYE_X[1], BOX_EYE_Y]])
    best, best_cost = None, math.inf
    for left in (c for c in centres if c[0] < 0.5):
        for right in (c for c in centres if c[0] >= 0.5):
            pair = np.array([left, right])
            gap = float(np.hypot(*(pair[1] - pair[0])))
            tilt = math.degrees(math.atan2(pair[1, 1] - pair[0, 1], pair[1, 0] - pair[0, 0]))
            cost = float(np.linalg.norm(pair - expected, axis=1).sum())
            if EYE_GAP_RANGE[0] <= gap <= EYE_GAP_RANGE[1] and abs(tilt) <= MAX_EYE_TILT \
                    and cost < best_cost:
                best, best_cost = pair, cost
    fractions = expected if best is None else best
    eyes = np.array([box.x, box.y]) + fractions * np.array([box.w, box.h])
    return eyes, best is not None


# -------------------------------------------------------------------------- alignment


def align(image: ImageSource, size: int = DEFAULT_SIZE, name: str | None = None) -> AlignedFace:
    """Find exactly one face and crop it FFHQ-style into a `size` x `size` RGB image.

    Raises `FaceError` when there is no face or more than one. See `AlignedFace`. After a
    photo of `RELEASE_AFTER_PIXELS` or more, the memory its copies took is given back.
    """
    if isinstance(image, (str, os.PathLike)) and name is None:
        name = Path(image).name
    name = name or "the photo"
    image = load_image(image, name)
    large = image.width * image.height >= RELEASE_AFTER_PIXELS
    try:
        return _align(image, size, name)
    finally:
        if large:
            del image  # (a caller's own PIL image stays theirs)
            release_freed_memory()


def _align(image: Image.Image, size: int, name: str) -> AlignedFace:
    boxes = detect_faces(image)
    if not boxes:
        raise FaceError(f"No face found in {name}. Use a well-lit, front-facing photo where "
                        "the face is at least a fifth of the picture's height.", "no_face")
    if len(boxes) > 1:
        raise FaceError(f"Found {len(boxes)} faces in {name}; use a photo of one person "
                        "(crop the others out).", "several_faces", faces=len(boxes))
    box = boxes[0]
    eyes, detected = find_eyes(image, box)
    # 1. the FFHQ quad: a square of half-side |x| around c, oriented along the eye line
    eye_left, eye_right = eyes
    eye_avg, eye_to_eye = (eye_left + eye_right) / 2, eye_right - eye_left
    down = np.array([-eye_to_eye[1], eye_to_eye[0]]) / np.hypot(*eye_to_eye)
    eye_to_mouth = down * (BOX_MOUTH_Y - BOX_EYE_Y) * box.h  # the mouth is not detected
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x *= max(np.hypot(*eye_to_eye) * FFHQ_EYE_SCALE,
             np.hypot(*eye_to_mouth) * FFHQ_MOUTH_SCALE) / np.hypot(*x)
    y = np.array([-x[1], x[0]])
    centre = eye_avg + eye_to_mouth * FFHQ_CENTRE_SHIFT
    # 2. shrink very large photos first so the warp never minifies by more than 2x
    pixels = np.asarray(image)
    shrink = max(1, int(2 * np.hypot(*x) // (2 * size)))
    if shrink > 1:
        pixels = cv2.resize(pixels, (image.width // shrink, image.height // shrink),
                            interpolation=cv2.INTER_AREA)
        centre, x, y = centre / shrink, x / shrink, y / shrink
    # 3. rotate and crop at the photo's own scale, then resample to `size`
    crop = _warp_square(pixels, centre, x, y, max(1, round(2 * np.hypot(*x))))
    aligned = Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS)
    tilt = math.degrees(math.atan2(eye_to_eye[1], eye_to_eye[0]))
    eye_points = ((float(eye_left[0]), float(eye_left[1])),
                  (float(eye_right[0]), float(eye_right[1])))
    return AlignedFace(aligned, box, eye_points, detected, tilt)


def align_face(image: ImageSource, size: int = DEFAULT_SIZE, name: str | None = None
               ) -> Image.Image:
    """The aligned `size` x `size` RGB face of a photo of one person (see `align`)."""
    return align(image, size, name).image


def _warp_square(pixels: np.ndarray, centre: np.ndarray, x: np.ndarray, y: np.ndarray,
                 side: int) -> np.ndarray:
    """Resample the square quad (centre +- x +- y, photo px) into [side, side, 3] uint8.

    Where the quad leaves the photo, the photo is mirrored at its edge and faded into a
    blurred copy, so padding looks like out-of-focus background instead of a hard seam.
    """
    # output pixel centre (j + 0.5) / side in [0, 1] -> photo position; pixel centres at i + 0.5
    a = np.stack([2 * x, 2 * y], axis=1) / side
    offset = centre - x - y + a @ np.array([0.5, 0.5]) - 0.5
    matrix = np.concatenate([a, offset[:, None]], axis=1)
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    crop = cv2.warpAffine(pixels, matrix, (side, side), flags=flags,
                          borderMode=cv2.BORDER_REFLECT_101)
    inside = cv2.warpAffine(np.ones(pixels.shape[:2], np.uint8), matrix, (side, side),
                            flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if inside.all():
        return crop
    distance = cv2.distanceTransform((1 - inside).astype(np.uint8), cv2.DIST_L2, 3)
    fade = np.clip(distance / (PAD_FADE * side), 0, 1)[..., None]
    blurred = cv2.GaussianBlur(crop, (0, 0), max(1.0, PAD_BLUR * side))
    return (crop * (1 - fade) + blurred * fade).round().astype(np.uint8)
