"""Writing an artifact: entries into a temporary zip, the manifest last, then an atomic rename."""

from __future__ import annotations

import contextlib
import io
import os
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import numpy as np

from amber.artifact import _codec
from amber.artifact._atomic import atomic_writer
from amber.artifact._digest import OVERLAP_FROM, digest_all, digest_beside
from amber.artifact._manifest import MANIFEST_NAME, SIGNATURE_NAME, encode
from amber.artifact._zip import ZipWriter
from amber.errors import IntegrityError

__all__ = ["ArtifactWriter", "artifact_writer", "check_compress"]


def check_compress(compress: str) -> str:
    if not isinstance(compress, str) or compress not in _codec.AUTO_CHOICES:
        raise ValueError(
            f"compress={compress!r} is not a codec Amber knows; use one of "
            f"{', '.join(repr(c) for c in _codec.AUTO_CHOICES)}"
        )
    return compress


def _as_bytes_view(data: Any) -> memoryview:
    mv = memoryview(data)
    if not mv.c_contiguous:
        mv = memoryview(bytes(mv))
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


class ArtifactWriter:
    """Collects entries for one artifact; :func:`artifact_writer` makes it and finishes it."""

    def __init__(self, fileobj: BinaryIO, *, compress: str = "none") -> None:
        self._zip = ZipWriter(fileobj)
        self.compress = check_compress(compress)
        self.entries: dict[str, dict[str, Any]] = {}

    def add(self, name: str, data: Any, *, compress: str | None = None) -> str:
        """Add one entry from any contiguous buffer; returns the codec used."""
        if name in (MANIFEST_NAME, SIGNATURE_NAME) or name in self.entries:
            raise ValueError(f"entry {name!r} is reserved or already written")
        mv = _as_bytes_view(data)
        codec = check_compress(compress) if compress is not None else self.compress
        if codec == "auto":
            codec = _codec.choose_codec(mv)
        stored = mv
        if codec != "none":
            packed = memoryview(_codec.compress(codec, mv))
            if packed.nbytes < mv.nbytes:
                stored = packed
            else:
                codec = "none"
        if stored.nbytes >= OVERLAP_FROM:
            collect = digest_beside(stored)
            try:
                entry = self._zip.add(name, stored, 0)
            finally:
                digests = collect()  # never leave the threads reading a buffer being freed
            self._zip.set_crc32(entry, digests.crc32)
        else:
            digests = digest_all(stored)
            self._zip.add(name, stored, digests.crc32)
        self.entries[name] = {
            "size": mv.nbytes,
            "stored_size": stored.nbytes,
            "compression": codec,
            "xxh3_128": digests.xxh3_128,
            "blake3": digests.blake3,
        }
        return codec

    def add_array(self, name: str, array: np.ndarray, *, compress: str | None = None) -> None:
        """Add a plain ``.npy`` entry (never pickled: object arrays are refused)."""
        if array.dtype.hasobject:
            raise TypeError(
                f"cannot store {name!r} as a plain array: dtype {array.dtype} holds Python "
                f"objects; convert it (e.g. to str) first"
            )
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
        self.add(name, buf.getbuffer(), compress=compress)

    def add_stored(self, name: str, stored: memoryview, record: dict[str, Any]) -> None:
        """Copy an entry from another artifact as stored (no re-compression), digests verified."""
        if name in (MANIFEST_NAME, SIGNATURE_NAME) or name in self.entries:
            raise ValueError(f"entry {name!r} is reserved or already written")
        digests = digest_all(stored)
        if digests.blake3 != record["blake3"] or digests.xxh3_128 != record["xxh3_128"]:
            raise IntegrityError(f"entry {name!r} does not match its digests; not copied")
        self._zip.add(name, stored, digests.crc32)
        self.entries[name] = dict(record)

    def finish(
        self, manifest: dict[str, Any], *, signer: Callable[[bytes], bytes] | None = None
    ) -> bytes:
        """Write the manifest (with the entry table), an optional signature, the directory.

        ``signer`` receives the exact manifest bytes and returns the signature stored as
        ``amber.sig``.
        """
        manifest = {**manifest, "entries": self.entries}
        raw = encode(manifest)
        self._zip.add(MANIFEST_NAME, raw, zlib.crc32(raw))
        if signer is not None:
            signature = signer(raw)
            self._zip.add(SIGNATURE_NAME, signature, zlib.crc32(signature))
        self._zip.close()
        return raw


@contextlib.contextmanager
def artifact_writer(
    path: str | os.PathLike[str], *, compress: str = "none"
) -> Iterator[ArtifactWriter]:
    """Write an artifact atomically: ``path`` changes only if the block and ``finish`` succeed."""
    check_compress(compress)
    with atomic_writer(path) as f:
        yield ArtifactWriter(f, compress=compress)
