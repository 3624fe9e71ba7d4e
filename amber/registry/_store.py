"""Blob storage: artifact files named by the BLAKE3 digest of their bytes.

Layout under the registry's location::

    blobs/ab/ab12...ef.amber      one artifact file, named by its 64-digit BLAKE3 digest
    tmp/                          (local folders only) files being saved or copied in

Identical pushes share one blob. A local folder is written by rename from ``tmp/`` (atomic,
fsynced); an fsspec store (``s3://``, ``gs://``, ``memory://``, ...) by one ``put`` of the whole
object, which object stores make visible only once complete. Either way the stored bytes are
hashed again before the catalog may refer to them.

Remote blobs are downloaded once into a local cache keyed by the same digest (``AMBER_CACHE``,
default ``~/.cache/amber``), checked against it, and loaded from there.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from amber.artifact._atomic import fsync_dir
from amber.artifact._digest import blake3_hasher
from amber.errors import AmberError, IntegrityError
from amber.registry._errors import StorageUnavailable

__all__ = ["LocalStore", "RemoteStore", "default_cache_dir", "file_blake3"]

_CHUNK = 8 << 20
_BLOB_NAME = re.compile(r"([0-9a-f]{64})\.amber")


def file_blake3(path: str | os.PathLike[str]) -> str:
    """BLAKE3 of a whole file (memory-mapped, hashed on all cores)."""
    hasher = blake3_hasher()
    if os.path.getsize(path):
        hasher.update_mmap(path)
    return hasher.hexdigest()


def default_cache_dir() -> Path:
    env = os.environ.get("AMBER_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "amber"


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _blob_rel(blob_hash: str) -> str:
    if not _HEX64.fullmatch(blob_hash):  # a hash from the catalog becomes a path: vet it
        raise IntegrityError(
            f"the catalog names the blob {blob_hash[:80]!r}, which is not a BLAKE3 digest (64 "
            f"lowercase hex digits); the catalog was altered. Restore it from a backup"
        )
    return f"blobs/{blob_hash[:2]}/{blob_hash}.amber"


def _copy_hashing(src: Any, dst: Any) -> str:
    hasher = blake3_hasher()
    while chunk := src.read(_CHUNK):
        hasher.update(chunk)
        dst.write(chunk)
    return hasher.hexdigest()


_NOT_PUBLISHED = "nothing was published. Retry, and check the storage's health"


def _mismatch(what: str, expected: str, got: str, then: str = _NOT_PUBLISHED) -> IntegrityError:
    return IntegrityError(
        f"{what} has blake3 {got[:16]}... but {expected[:16]}... was expected: the bytes changed "
        f"in transit or in storage; {then}"
    )


class LocalStore:
    """Blobs in a local folder."""

    remote = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def blob_path(self, blob_hash: str) -> Path:
        return self.root / _blob_rel(blob_hash)

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except (AmberError, FileNotFoundError):
            raise
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot {action} the registry folder {self.url!r}: {exc}; check that it exists, "
                f"is writable, and that the disk is not full"
            ) from exc

    def staging_file(self) -> Path:
        """A fresh path in ``tmp/``, on the same file system as the blobs (for a rename)."""
        with self._guard("write to"):
            folder = self.root / "tmp"
            folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{os.getpid()}-{secrets.token_hex(8)}.amber"

    def exists(self, blob_hash: str) -> bool:
        return self.blob_path(blob_hash).is_file()

    def put(self, src: Path, blob_hash: str, *, owned: bool) -> None:
        """Store ``src`` (hashed as ``blob_hash``); an ``owned`` staging file is moved in.

        A blob already stored under that name is hashed first: kept if whole, replaced if its
        bytes were damaged (so pushing the original file again repairs it)."""
        dest = self.blob_path(blob_hash)
        with self._guard("write to"):
            if dest.is_file() and file_blake3(dest) == blob_hash:
                if owned:
                    src.unlink(missing_ok=True)
                return
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not owned:
                staged = self.staging_file()
                with open(src, "rb") as fin, open(staged, "xb") as fout:
                    got = _copy_hashing(fin, fout)
                    fout.flush()
                    os.fsync(fout.fileno())
                if got != blob_hash:
                    staged.unlink(missing_ok=True)
                    raise _mismatch(f"the copy of {str(src)!r}", blob_hash, got)
                src = staged
            os.chmod(src, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            os.replace(src, dest)
            fsync_dir(dest.parent)

    def local_path(self, blob_hash: str, size: int) -> Path:
        path = self.blob_path(blob_hash)
        if not path.is_file():
            raise IntegrityError(
                f"the blob {blob_hash[:16]}... of this version is missing from {self.url!r} "
                f"({str(path)!r}); the registry folder was altered by hand. Restore it from a "
                f"backup, or delete the version"
            )
        return path

    def list(self) -> Iterator[tuple[str, int]]:
        folder = self.root / "blobs"
        if not folder.is_dir():
            return
        for sub in sorted(folder.iterdir()):
            for entry in sorted(sub.iterdir()) if sub.is_dir() else ():
                m = _BLOB_NAME.fullmatch(entry.name)
                if m:
                    yield m.group(1), entry.stat().st_size

    def delete(self, blob_hash: str) -> bool:
        with self._guard("delete from"):
            path = self.blob_path(blob_hash)
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only when empty
            return True

    def clean_staging(self, older_than: float) -> int:
        """Remove leftover files of interrupted pushes from ``tmp/``; returns how many."""
        folder = self.root / "tmp"
        removed = 0
        if not folder.is_dir():
            return 0
        cutoff = time.time() - older_than
        for entry in folder.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime <= cutoff:
                    entry.unlink()
                    removed += 1
        return removed


class RemoteStore:
    """Blobs behind any fsspec URL, with a local cache of downloaded blobs."""

    remote = True

    def __init__(self, url: str, storage_options: dict[str, Any], cache_dir: Path) -> None:
        try:
            import fsspec
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError(
                f"a registry at {url!r} needs fsspec: pip install 'amber[registry]'"
            ) from exc
        self.url = url
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except (ImportError, ValueError) as exc:
            raise StorageUnavailable(
                f"cannot open blob storage {url!r}: {exc}. For s3:// install s3fs, for gs:// "
                f"gcsfs, for az:// adlfs (fsspec names the package to install)"
            ) from exc
        self.root = root.rstrip("/")
        self.cache = cache_dir

    def _key(self, blob_hash: str) -> str:
        return f"{self.root}/{_blob_rel(blob_hash)}"

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except AmberError:
            raise
        except Exception as exc:
            raise StorageUnavailable(
                f"cannot {action} blob storage {self.url!r}: {type(exc).__name__}: {exc}. Check "
                f"the URL, that the bucket exists and is reachable (endpoint, network), and the "
                f"credentials (storage_options=, or the usual environment variables such as "
                f"AWS_ACCESS_KEY_ID)"
            ) from exc

    def staging_file(self) -> Path:
        folder = self.cache / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{os.getpid()}-{secrets.token_hex(8)}.amber"

    def _size(self, key: str) -> int | None:
        self.fs.invalidate_cache(key)
        try:
            return int(self.fs.info(key)["size"])
        except FileNotFoundError:
            return None

    def exists(self, blob_hash: str) -> bool:
        with self._guard("read"):
            return self._size(self._key(blob_hash)) is not None

    def _remote_hash(self, key: str) -> str:
        with self.fs.open(key, "rb", block_size=_CHUNK) as f:
            hasher = blake3_hasher()
            while chunk := f.read(_CHUNK):
                hasher.update(chunk)
        return hasher.hexdigest()

    def put(self, src: Path, blob_hash: str, *, owned: bool) -> None:
        """Upload ``src`` unless a whole copy is stored, then check the stored size and BLAKE3
        digest. A blob already stored under that name is read back and hashed first (it is
        replaced if its bytes were damaged), so what the catalog refers to was always checked."""
        key = self._key(blob_hash)
        size = src.stat().st_size
        with self._guard("upload to"):
            if self._size(key) == size and self._remote_hash(key) == blob_hash:
                self._keep(src, blob_hash, owned)
                return
            self.fs.put_file(str(src), key)
            stored = self._size(key)
            if stored != size:
                raise IntegrityError(
                    f"uploaded {size} bytes to {self.url!r} but the store holds {stored}; "
                    f"nothing was published. Retry, and check the storage's health"
                )
            got = self._remote_hash(key)
            if got != blob_hash:
                with contextlib.suppress(Exception):
                    self.fs.rm_file(key)
                raise _mismatch(f"the uploaded copy of {str(src)!r}", blob_hash, got)
        self._keep(src, blob_hash, owned)

    def _keep(self, src: Path, blob_hash: str, owned: bool) -> None:
        """A staging file we wrote becomes the cached copy: the next load downloads nothing."""
        if not owned:
            return
        dest = self.cache / _blob_rel(blob_hash)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(src, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            os.replace(src, dest)
        except OSError:
            src.unlink(missing_ok=True)

    def local_path(self, blob_hash: str, size: int) -> Path:
        """The cached copy, downloaded (and its digest checked) on first use."""
        dest = self.cache / _blob_rel(blob_hash)
        if dest.is_file() and dest.stat().st_size == size:
            return dest
        tmp = self.staging_file()
        try:
            with self._guard("download from"), open(tmp, "xb") as out:
                try:
                    src = self.fs.open(self._key(blob_hash), "rb", block_size=_CHUNK)
                except FileNotFoundError:
                    raise IntegrityError(
                        f"the blob {blob_hash[:16]}... of this version is missing from "
                        f"{self.url!r} ({self._key(blob_hash)}); the bucket was altered by hand. "
                        f"Restore it from a backup, or delete the version"
                    ) from None
                with src:
                    got = _copy_hashing(src, out)
                out.flush()
                os.fsync(out.fileno())
            if got != blob_hash:
                raise _mismatch(
                    f"the download of blob {blob_hash[:16]}... from {self.url!r}",
                    blob_hash,
                    got,
                    "the stored blob is damaged, or the download was. Retry; if it fails again, "
                    "push the original file again (a push checks the stored copy and replaces a "
                    "damaged one), or restore the blob from a backup",
                )
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def list(self) -> Iterator[tuple[str, int]]:
        with self._guard("list"):
            base = f"{self.root}/blobs"
            self.fs.invalidate_cache(base)
            try:
                found = self.fs.find(base, detail=True)
            except FileNotFoundError:
                return
        for path, info in sorted(found.items()):
            m = _BLOB_NAME.fullmatch(path.rsplit("/", 1)[-1])
            if m:
                yield m.group(1), int(info.get("size") or 0)

    def delete(self, blob_hash: str) -> bool:
        with self._guard("delete from"):
            try:
                self.fs.rm_file(self._key(blob_hash))
            except FileNotFoundError:
                return False
            return True

    def clean_staging(self, older_than: float) -> int:
        folder = self.cache / "tmp"
        if not folder.is_dir():
            return 0
        cutoff = time.time() - older_than
        removed = 0
        for entry in folder.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime <= cutoff:
                    entry.unlink()
                    removed += 1
        return removed
