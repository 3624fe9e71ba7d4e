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
from amber.artifact._digest import PART_SIZE, Digests, digest_all, digest_many, split_digests
from amber.artifact._manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    PARTS_KEY,
    SIGNATURE_NAME,
    encode,
)
from amber.artifact._zip import ZipWriter
from amber.errors import IntegrityError

__all__ = ["ArtifactWriter", "artifact_writer", "check_compress", "npy_bytes"]

# Entries from this size are hashed by the digest threads, in batches of about BATCH_BYTES, while
# the writer goes on: a batch starts once it is full, before its last entry is written (so one
# large entry is hashed beside its own write), and is collected when the next one starts or at
# finish, CRC-32s then patched into the local headers. Smaller entries cost less to hash at once
# than to hand over.
DEFER_FROM = 64 << 10
BATCH_BYTES = 4 << 20


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


def npy_bytes(name: str, array: np.ndarray) -> memoryview:
    """``array`` as a plain, C-ordered ``.npy`` file: an object array is refused (it would be
    pickled)."""
    if array.dtype.hasobject:
        raise TypeError(
            f"cannot store {name!r} as a plain array: dtype {array.dtype} holds Python "
            f"objects; convert it (e.g. to str) first"
        )
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getbuffer()


class ArtifactWriter:
    """Collects entries for one artifact; :func:`artifact_writer` makes it and finishes it."""

    def __init__(self, fileobj: BinaryIO, *, compress: str = "none") -> None:
        self._zip = ZipWriter(fileobj)
        self.compress = check_compress(compress)
        self.entries: dict[str, dict[str, Any]] = {}
        self._parts: dict[str, list[str]] = {}  # the parts' digests of large entries
        self._part_size = PART_SIZE  # their parts' size (a copied entry's may differ)
        self._batch: list[tuple[str, memoryview]] = []
        self._batch_bytes = 0
        self._job: tuple[list[str], Callable[[], list[Digests]]] | None = None
        self.file_size = 0  # the artifact's length in bytes, once finish() has written it

    def add(self, name: str, data: Any, *, compress: str | None = None) -> str:
        """Add one entry from any contiguous buffer; returns the codec used."""
        if name in (MANIFEST_NAME, SIGNATURE_NAME) or name in self.entries:
            raise ValueError(f"entry {name!r} is reserved or already written")
        if self._part_size != PART_SIZE:
            raise ValueError(
                f"entry {name!r}: entries copied with parts of {self._part_size} bytes cannot "
                f"be joined by new ones (parts of {PART_SIZE})"
            )
        mv = _as_bytes_view(data)
        codec = check_compress(compress) if compress is not None else self.compress
        chosen: bytes | None = None
        auto = codec == "auto"
        if auto:
            codec, chosen = _codec.choose_codec(mv)
        stored = mv
        if codec != "none":
            packed = memoryview(chosen or _codec.compress(codec, mv, auto=auto))
            if packed.nbytes < mv.nbytes:
                stored = packed
            else:
                codec = "none"
        self.entries[name] = {
            "size": mv.nbytes,
            "stored_size": stored.nbytes,
            "compression": codec,
        }
        if stored.nbytes < DEFER_FROM:
            digests = digest_all(stored)
            self._zip.add(name, stored, digests.crc32)
            self._record(name, digests)
            return codec
        self._batch.append((name, stored))
        self._batch_bytes += stored.nbytes
        if self._batch_bytes >= BATCH_BYTES:
            self._submit()
        self._zip.add(name, stored, 0)  # its CRC-32 is patched in when collected
        return codec

    def _record(self, name: str, digests: Digests) -> None:
        self.entries[name]["xxh3_128"] = digests.xxh3_128
        self.entries[name]["blake3"] = digests.blake3
        if digests.parts:
            self._parts[name] = list(digests.parts)

    def _submit(self) -> None:
        """Collect the batch being hashed, if any, and start hashing the one filled since."""
        self._collect()
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._job = ([n for n, _ in batch], digest_many([b for _, b in batch]))

    def _collect(self) -> None:
        if self._job is None:
            return
        (names, collect), self._job = self._job, None
        crcs = {}
        for name, digests in zip(names, collect(), strict=True):
            self._record(name, digests)
            crcs[name] = digests.crc32
        self._zip.set_crc32(crcs)

    def add_array(self, name: str, array: np.ndarray, *, compress: str | None = None) -> None:
        """Add a plain ``.npy`` entry (never pickled: object arrays are refused)."""
        self.add(name, npy_bytes(name, array), compress=compress)

    def add_stored(
        self,
        name: str,
        stored: memoryview,
        record: dict[str, Any],
        *,
        parts: list[str] | None = None,
        part_size: int = PART_SIZE,
    ) -> None:
        """Copy an entry from another artifact as stored (no re-compression), digests verified.

        The entry keeps the parts' digests it had there (``parts``, of ``part_size`` bytes
        each), or none: a copy that gained or changed a parts table would change the manifest
        that a signature over the source's covers (a registry's detached signature, checked
        against the exported file). The digests are checked against the bytes, never trusted.
        """
        if name in (MANIFEST_NAME, SIGNATURE_NAME) or name in self.entries:
            raise ValueError(f"entry {name!r} is reserved or already written")
        digests = digest_all(stored, parts=False)  # (the parts as the source cut them, below)
        if digests.blake3 != record["blake3"] or digests.xxh3_128 != record["xxh3_128"]:
            raise IntegrityError(f"entry {name!r} does not match its digests; not copied")
        if parts is not None:
            if self._parts and part_size != self._part_size:
                raise ValueError(
                    f"entry {name!r} has parts of {part_size} bytes, the others' are "
                    f"{self._part_size}: one artifact has one part size"
                )
            if list(split_digests(stored, part_size)) != parts:
                raise IntegrityError(
                    f"entry {name!r} does not match its parts' digests; not copied"
                )
            self._part_size = part_size
        self._zip.add(name, stored, digests.crc32)
        self.entries[name] = dict(record)
        self._record(name, digests._replace(parts=tuple(parts or ())))

    def finish(
        self, manifest: dict[str, Any], *, signer: Callable[[bytes], bytes] | None = None
    ) -> bytes:
        """Write the manifest (with the entry table), an optional signature, the directory.

        ``signer`` receives the exact manifest bytes and returns the signature stored as
        ``amber.sig``.
        """
        if self._batch:
            self._submit()
        self._collect()
        # the parts' digests are this writer's: made for added entries, checked for copied
        # ones (add_stored); a table the caller passes on (a rewrite's source manifest) is
        # dropped
        manifest = {k: v for k, v in manifest.items() if k != PARTS_KEY}
        manifest["entries"] = self.entries
        if self._parts:
            manifest[PARTS_KEY] = {"part_size": self._part_size, "digests": self._parts}
        raw = encode(manifest)
        if len(raw) > MAX_MANIFEST_BYTES:  # a reader refuses it: never replace a file with it
            raise ValueError(
                f"the manifest would be {len(raw):,} bytes, over the {MAX_MANIFEST_BYTES:,} a "
                f"reader accepts; the metadata is too large: keep large data out of metadata= "
                f"(save it as a file of its own, or as part of the model)"
            )
        self._zip.add(MANIFEST_NAME, raw, zlib.crc32(raw))
        if signer is not None:
            signature = signer(raw)
            self._zip.add(SIGNATURE_NAME, signature, zlib.crc32(signature))
        self.file_size = self._zip.close()
        return raw


@contextlib.contextmanager
def artifact_writer(
    path: str | os.PathLike[str], *, compress: str = "none"
) -> Iterator[ArtifactWriter]:
    """Write an artifact atomically: ``path`` changes only if the block and ``finish`` succeed."""
    check_compress(compress)
    with atomic_writer(path) as f:
        writer = ArtifactWriter(f, compress=compress)
        yield writer
        if not writer.file_size:
            # a zip without its directory is no artifact: keep whatever file was there
            raise RuntimeError("artifact_writer: the block ended without writer.finish()")
