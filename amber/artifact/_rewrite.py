"""Re-writing an artifact with a changed manifest: entries copied byte for byte, never re-encoded.

Signing and registry export use this: the payload, its compression and its digests stay exactly
as saved; only the manifest (and the optional signature) change, and the result replaces the
target atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from amber.artifact._reader import ArtifactReader
from amber.artifact._writer import artifact_writer

__all__ = ["rewrite"]


def rewrite(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    update: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    signer: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """Copy ``source`` to ``target`` (they may be the same file); return the new manifest bytes.

    ``update`` receives the manifest without its entry table and returns the one to write.
    ``signer`` receives the final manifest bytes and returns the ``amber.sig`` content; without
    it any existing signature is dropped (it would no longer match).
    """
    with ArtifactReader(source) as reader:
        manifest = {k: v for k, v in reader.manifest.items() if k != "entries"}
        if update is not None:
            manifest = update(manifest)
            manifest.pop("entries", None)
        records = reader.entries
        with artifact_writer(target) as writer:
            for name, record in records.items():
                # (the parts' digests too, as they were: the new manifest differs from the
                # source's only where ``update`` changed it)
                parts, size = reader.parts.get(name), reader.part_size
                writer.add_stored(name, reader.raw_entry(name), record, parts=parts, part_size=size)
            return writer.finish(manifest, signer=signer)
