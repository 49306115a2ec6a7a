"""Where data and weights come from, in this order: an explicit path, the user cache, a local
mirror directory (``IDLSEC_MIRROR``), then the official download, verified by checksum."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import ChecksumError, ResourceError


def cache_dir() -> Path:
    """The user cache: ``$IDLSEC_CACHE`` or ``~/.cache/idlsec``."""
    root = os.environ.get("IDLSEC_CACHE") or os.path.join(Path.home(), ".cache", "idlsec")
    return Path(root)


def mirror_dir() -> Path | None:
    """The local mirror (``$IDLSEC_MIRROR``), laid out like the project's ``shared/`` folder."""
    root = os.environ.get("IDLSEC_MIRROR")
    return Path(root) if root else None


def offline() -> bool:
    """``IDLSEC_OFFLINE=1`` forbids downloads (the test suite sets it)."""
    return os.environ.get("IDLSEC_OFFLINE", "") not in ("", "0")


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Remote:
    """One file: its name, the relative path inside the mirror / cache, and how to verify it."""

    filename: str
    relpath: str  # e.g. "models/cifar10-resnet/resnet20-12fca82f.th"
    digest: str
    algorithm: str = "sha256"
    url: str | None = None

    def verify(self, path: Path) -> Path:
        got = file_digest(path, self.algorithm)
        if got != self.digest:
            raise ChecksumError(
                f"{path}: {self.algorithm} is {got}, expected {self.digest}; the file is corrupt "
                "or not the expected release (delete it and try again)"
            )
        return path


def resolve(remote: Remote, explicit: str | os.PathLike | None = None) -> Path:
    """Find ``remote`` locally or download it; always returns a verified path."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ResourceError(f"{path} does not exist")
        return remote.verify(path)
    cached = cache_dir() / remote.relpath
    if cached.is_file():
        return remote.verify(cached)
    mirror = mirror_dir()
    if mirror is not None and (mirror / remote.relpath).is_file():
        return remote.verify(mirror / remote.relpath)
    return download(remote, cached)


def download(remote: Remote, dest: Path) -> Path:
    where = f"mirror {mirror_dir()}" if mirror_dir() else "no IDLSEC_MIRROR set"
    if remote.url is None:
        raise ResourceError(f"{remote.filename} not found in the cache ({dest}) or mirror ({where}) "
                            "and it has no official download")
    if offline():
        raise ResourceError(f"{remote.filename} not found in the cache ({dest}) or mirror ({where}), "
                            "and downloads are disabled (IDLSEC_OFFLINE=1)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=60) as r:
            shutil.copyfileobj(r, out)
        remote.verify(Path(tmp))
        os.replace(tmp, dest)
    except OSError as e:
        raise ResourceError(f"{remote.filename} not found in the cache or mirror ({where}) and the "
                            f"download from {remote.url} failed: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
