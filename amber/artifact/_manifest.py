"""The manifest (``amber.json``): its format version, its encoding, and the checks on reading it."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from amber.artifact._codec import CODECS
from amber.errors import FormatError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "PARTS_KEY",
    "SIGNATURE_NAME",
    "decode",
    "encode",
]

FORMAT_NAME = "amber"
FORMAT_VERSION = 1
MANIFEST_NAME = "amber.json"
SIGNATURE_NAME = "amber.sig"
MAX_MANIFEST_BYTES = 64 << 20
#: The integers a JSON reader (orjson) gives back as integers: past them, floats or errors.
JSON_INT_RANGE = (-(2**63), 2**64 - 1)
#: The optional field with the XXH3-128 digests of large entries' parts (FORMAT.md section 2).
PARTS_KEY = "xxh3_128_parts"
#: The part sizes a reader accepts (1 MiB to 1 GiB, a power of two).
_PART_SIZES = {1 << k for k in range(20, 31)}


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be UTF-8 (and so JSON text): no lone surrogate (``"\\ud800"``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_ENTRY_KEYS = {"size", "stored_size", "compression", "xxh3_128", "blake3"}
_CODEC_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_KNOWN_CODECS = frozenset(CODECS)  # (well-formed names)


def encode(manifest: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8. What a signature covers.

    orjson writes it (a fifth of the time the json module takes, which shows on small models);
    the json module takes what orjson refuses (integers beyond 64 bits, keys that are not
    strings), with the same key order and separators.
    """
    try:
        return orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return json.dumps(
            manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()


def _bad(msg: str) -> FormatError:
    return FormatError(f"malformed manifest: {msg}. The file is damaged or was not made by Amber.")


def _check_parts(parts: Any, entries: dict[str, Any]) -> None:
    if not isinstance(parts, dict) or set(parts) != {"part_size", "digests"}:
        raise _bad(f"'{PARTS_KEY}' is not a part size and a table of digests")
    size, table = parts["part_size"], parts["digests"]
    if type(size) is not int or size not in _PART_SIZES:
        raise _bad(
            f"'{PARTS_KEY}' has part size {size!r:.40}, not a power of two from 1 MiB to 1 GiB"
        )
    if not isinstance(table, dict):
        raise _bad(f"'{PARTS_KEY}' has no table of digests")
    for name, digests in table.items():
        rec = entries.get(name)
        if rec is None:
            raise _bad(f"'{PARTS_KEY}' lists {name!r:.100}, which is not an entry")
        count = -(-rec["stored_size"] // size)
        if (
            not isinstance(digests, list)
            or len(digests) != count
            or not all(isinstance(d, str) for d in digests)
        ):
            raise _bad(
                f"'{PARTS_KEY}' for {name!r} is not a list of {count} digests (one for each "
                f"{size:,} bytes of its {rec['stored_size']:,})"
            )


# a distribution name (PEP 508): what a load looks up in the installed packages' metadata
_DISTRIBUTION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,198}[A-Za-z0-9])?")


def decode(raw: bytes | memoryview) -> dict[str, Any]:
    """Parse and check the manifest's shape; refuse unknown format versions with what to do."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise _bad(f"{len(raw)} bytes, larger than the {MAX_MANIFEST_BYTES} byte limit")
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise _bad("the 'format' field is not 'amber'")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _bad(f"format_version is {version!r}, not an integer")
    if version > FORMAT_VERSION:
        raise FormatError(
            f"this artifact uses format version {version}, newer than the {FORMAT_VERSION} this "
            f"Amber ({_amber_version()}) reads; upgrade Amber (pip install -U amber) "
            f"(it was written by Amber {manifest.get('amber_version', '?')})"
        )
    if version < 1:
        raise _bad(f"format_version {version} does not exist")
    entries = manifest.get("entries")
    if not isinstance(entries, dict):
        raise _bad("'entries' is missing or not an object")
    # (type() rather than isinstance: orjson gives plain types, and a forest has 200 entries)
    for name, rec in entries.items():
        if type(rec) is not dict or rec.keys() != _ENTRY_KEYS:
            raise _bad(f"entry record for {name!r} is not of the expected shape")
        size, stored = rec["size"], rec["stored_size"]
        if not (type(size) is int and type(stored) is int and size >= 0 and stored >= 0):
            raise _bad(f"entry {name!r} has invalid sizes")
        codec = rec["compression"]
        # a codec a newer Amber added is refused when an entry of it is read (FORMAT.md 7)
        if type(codec) is not str or (
            codec not in _KNOWN_CODECS and not _CODEC_NAME.fullmatch(codec)
        ):
            raise _bad(f"entry {name!r} has a malformed compression {codec!r:.40}")
        if codec == "none" and size != stored:
            raise _bad(f"uncompressed entry {name!r} has two different sizes")
        if type(rec["xxh3_128"]) is not str or type(rec["blake3"]) is not str:
            raise _bad(f"entry {name!r} has malformed digests")
    if PARTS_KEY in manifest:
        _check_parts(manifest[PARTS_KEY], entries)
    for key, kind in (("payload", dict), ("environment", dict), ("handler", str)):
        if not isinstance(manifest.get(key), kind):
            raise _bad(f"'{key}' is missing or not a {kind.__name__}")
    for key in ("globals", "untrusted"):
        names = manifest.get(key, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _bad(f"'{key}' is not a list of names")
    for key in ("metadata", "signature", "probe"):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            raise _bad(f"'{key}' is not an object")
    probe = manifest.get("probe")
    if probe is not None and not (
        isinstance(probe.get("input"), dict) and isinstance(probe.get("outputs"), dict)
    ):
        raise _bad("the probe is not an input and a table of outputs")
    packages = manifest["environment"].get("packages", {})
    if not isinstance(packages, dict) or not all(isinstance(v, str) for v in packages.values()):
        raise _bad("'environment.packages' is not a table of version strings")
    bad = next((name for name in packages if not _DISTRIBUTION.fullmatch(name)), None)
    if bad is not None:
        raise _bad(f"'environment.packages' names {bad!r:.60}, which is no distribution name")
    if nesting_left(manifest.get("metadata")) < 0:
        raise _bad(f"the metadata nests deeper than {MAX_NESTING} levels")
    return manifest


MAX_NESTING = 200


def nesting_left(value: Any, left: int = MAX_NESTING) -> int:
    """0, or -1 if ``value`` nests deeper than ``left`` levels (walked without recursion:
    orjson reads nesting that Python's recursion could not print)."""
    stack = [(value, left)]
    while stack:
        item, room = stack.pop()
        if room < 0:
            return -1
        if isinstance(item, dict):
            stack.extend((v, room - 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, room - 1) for v in item)
    return 0


def _amber_version() -> str:
    from amber import __version__

    return __version__
