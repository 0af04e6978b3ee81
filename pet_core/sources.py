"""Where a named input lives, decided in one place for data sources, backbones and config paths: a local path,
a file inside an installed package (``pkg:<package>/<sub/path>``), a URL of any fsspec filesystem (``s3://``,
``gs://``, ``https://``, ``memory://``; ``file://`` is local) or a Hugging Face hub name.

Kept free of torch, transformers and pandas so that config checks and cache keys stay cheap to import.
"""

from __future__ import annotations

import enum
import importlib.util
from dataclasses import dataclass
from pathlib import Path


class SourceError(ValueError):
    """A name that cannot be located (the message names it and what to do)."""


class Where(enum.Enum):
    """The kinds of place a name can point to."""

    local = "local"
    url = "url"
    hub = "hub"


@dataclass(frozen=True)
class Location:
    """A located name: ``path`` for local ones (``relative``: written relative to the config's folder)."""

    text: str
    where: Where
    path: Path | None = None
    relative: bool = False


def package_path(text: str) -> Path:
    """``pkg:name/sub`` -> the folder of the installed package ``name`` joined with ``sub``."""
    package, _, sub = text[4:].partition("/")
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"{text}: package {package!r} is not installed (pip install {package})")
    return Path(next(iter(spec.submodule_search_locations))) / sub


def locate(text: str, base: Path | None = None) -> Location:
    """Where ``text`` points. A relative path counts as local when it starts with ``.`` or exists (under ``base``
    when given); any other name without a scheme is a hub name."""
    if text.startswith("pkg:"):
        return Location(text, Where.local, package_path(text))
    if text.startswith("file://"):
        return Location(text, Where.local, Path(text.removeprefix("file://")))
    if "://" in text:
        return Location(text, Where.url)
    path = Path(text).expanduser()
    if text.startswith(("/", "~")):
        return Location(text, Where.local, path)
    candidate = base / path if base is not None else path
    if text.startswith(".") or candidate.exists():
        return Location(text, Where.local, candidate, relative=True)
    return Location(text, Where.hub)


def url_fingerprint(url: str) -> dict[str, str]:
    """What an fsspec filesystem says identifies an object's content (ETag/md5, size, modification time),
    without downloading it; SourceError when the object cannot be reached."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
        info = fs.info(path)
    except (OSError, ValueError, ImportError) as err:
        raise SourceError(f"{url}: cannot be reached ({type(err).__name__}: {err})") from err
    keys = ("ETag", "etag", "md5", "checksum", "size", "mtime", "LastModified", "last_modified", "created")
    return {key: str(info[key]) for key in keys if info.get(key) is not None}
