"""What the studio lets a request touch: paths under the runs root only, an access token off 127.0.0.1, and
uploaded pictures decoded with limits.

    root = Path("runs").resolve()
    resolve_under(root, "demo/samples/grid.png")     # -> /abs/runs/demo/samples/grid.png
    resolve_under(root, "../etc/passwd")              # PathRefused: '..' is not allowed
    decode_upload(data_url_bytes)                      # -> PIL image, or UploadRefused (too big, bomb, not a picture)

A path is refused when it is absolute, holds ``..``, a NUL byte, a backslash or a hidden part (``.name``), or
when it resolves (symbolic links followed) outside the root.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import re
import secrets
import warnings
from pathlib import Path

MAX_UPLOAD_BYTES = 4 * 1024 * 1024  # one uploaded picture, encoded
MAX_BODY_BYTES = 12 * 1024 * 1024  # one request body (a picture and a mask as base64 JSON)
MAX_UPLOAD_PIXELS = 4096 * 4096  # decoded size; Pillow's own bomb check is set to the same bound
MAX_PATH_CHARS = 512
LOCAL_HOSTS = ("127.0.0.1", "localhost")
TOKEN_PARAM = "token"  # ?token=... on the first page load; a cookie of the same name afterwards
TOKEN_HEADER = "x-studio-token"
RUN_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*(/[A-Za-z0-9_][A-Za-z0-9_.=+-]*)*"  # 'demo', 'mnist/class-7'


class PathRefused(ValueError):
    """A path a request may not use; one line saying why."""


class UploadRefused(ValueError):
    """An upload that is too large, not a picture, or a decompression bomb."""


def resolve_under(root: Path, rel: str) -> Path:
    """``rel`` (a relative path with ``/`` separators) resolved under ``root`` (itself resolved); symlinks inside
    the root are followed as long as where they lead stays inside it."""
    if not isinstance(rel, str) or not rel.strip():
        raise PathRefused("give a path relative to the runs folder")
    if len(rel) > MAX_PATH_CHARS:
        raise PathRefused(f"path longer than {MAX_PATH_CHARS} characters")
    if "\x00" in rel or "\\" in rel:
        raise PathRefused("a path may not hold NUL bytes or backslashes")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel) or rel.startswith("~"):
        raise PathRefused("absolute paths are not allowed; give a path relative to the runs folder")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise PathRefused("'..' is not allowed in a path")
    if any(p.startswith(".") for p in parts):
        raise PathRefused("hidden files are not served")
    try:
        target = root.joinpath(*parts).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop, a name too long
        raise PathRefused(f"path cannot be resolved ({e.__class__.__name__})") from None
    if target != root and root not in target.parents:
        raise PathRefused("path leads outside the runs folder")
    return target


def run_name(name: str) -> str:
    """A run folder's name as the studio accepts it (one or more folder levels, safe characters)."""
    if not isinstance(name, str) or len(name) > 200 or not re.fullmatch(RUN_NAME, name):
        raise PathRefused(f"not a run name: {str(name)[:80]!r}")
    return name


def new_token() -> str:
    return secrets.token_urlsafe(18)


def token_ok(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; every request passes when no token is set (127.0.0.1)."""
    if expected is None:
        return True
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())


def decode_data_url(text: str) -> bytes:
    """The bytes of ``data:image/png;base64,...`` (or bare base64), at most MAX_UPLOAD_BYTES."""
    if not isinstance(text, str):
        raise UploadRefused("an image must be a data: URL string")
    if len(text) > MAX_UPLOAD_BYTES * 4 // 3 + 200:
        raise UploadRefused(f"image larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise UploadRefused("the image is not valid base64") from None


def decode_upload(data: bytes):
    """A PIL image from uploaded bytes: PNG/JPEG/GIF/BMP/WebP only, at most MAX_UPLOAD_PIXELS, fully decoded."""
    from PIL import Image

    from ..data.files import upright

    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadRefused(f"image larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    # (Pillow's own limit, Image.MAX_IMAGE_PIXELS, is left alone: it is the whole process's - the size check below,
    # made on the header before anything is decoded, is this upload's)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=["PNG", "JPEG", "GIF", "BMP", "WEBP"])
            w, h = img.size
            if w < 1 or h < 1 or w * h > MAX_UPLOAD_PIXELS:
                raise UploadRefused(f"image of {w}x{h} pixels is too large (at most {MAX_UPLOAD_PIXELS} pixels)")
            img.load()
            img = upright(img)  # as the browser showed it (EXIF orientation of a phone's photo)
            return img.convert("RGBA" if "A" in img.getbands() else "RGB")
    except UploadRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadRefused("image refused: decompression bomb (too many pixels)") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.UnidentifiedImageError) as e:
        raise UploadRefused(f"not a readable picture ({type(e).__name__})") from None
