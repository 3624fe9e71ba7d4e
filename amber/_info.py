"""What ``save`` returns and ``inspect`` shows: an artifact's manifest, readable."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amber._words import counted

__all__ = ["ArtifactInfo", "VerifyReport"]


@dataclass(frozen=True)
class ArtifactInfo:
    """An artifact's manifest, as ``amber.save`` wrote it and ``amber.inspect`` reads it.

    Reading it runs no model code and imports no framework.
    """

    path: Path
    manifest: dict[str, Any] = field(repr=False)
    file_size: int = 0
    signed: bool = False
    signer: dict[str, Any] | None = None
    """What the file's ``amber.sig`` says of itself (``key_id``, ``name``, ``version``), not
    checked: ``amber.verify(..., trusted_keys=...)`` checks it."""

    @property
    def format_version(self) -> int:
        return int(self.manifest["format_version"])

    @property
    def handler(self) -> str:
        return str(self.manifest["handler"])

    @property
    def framework(self) -> str:
        return str(self.manifest.get("framework", ""))

    @property
    def object_type(self) -> str:
        return str(self.manifest.get("object_type", ""))

    @property
    def globals(self) -> list[str]:
        return list(self.manifest.get("globals", []))

    @property
    def untrusted(self) -> list[str]:
        return list(self.manifest.get("untrusted", []))

    @property
    def environment(self) -> dict[str, Any]:
        return dict(self.manifest["environment"])

    @property
    def signature(self) -> dict[str, Any] | None:
        return self.manifest.get("signature")

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.manifest.get("metadata", {}))

    @property
    def registry(self) -> dict[str, Any]:
        """The registry metadata an exported file carries (name, version, metrics, tags,
        description, created, created_by; ``docs/FORMAT.md`` section 6.2), or ``{}``."""
        registry = self.manifest.get("registry")
        return dict(registry) if isinstance(registry, dict) else {}

    @property
    def has_probe(self) -> bool:
        return "probe" in self.manifest

    def to_dict(self) -> dict[str, Any]:
        """The manifest, with the file's path, size and signature (what it claims: unchecked)."""
        return {
            **self.manifest,
            "path": str(self.path),
            "file_size": self.file_size,
            "signed": self.signed,
            "signer": self.signer,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def __str__(self) -> str:
        try:
            return _printable(self._lines())
        except (TypeError, AttributeError, KeyError, ValueError) as exc:
            # a manifest with fields of other types than Amber writes: show what is safe
            return _printable(
                [
                    f"{self.path}  ({self.file_size:,} bytes): its manifest has fields Amber "
                    f"does not write ({type(exc).__name__}: {exc}); `amber inspect --json` shows "
                    f"it whole"
                ]
            )

    def _lines(self) -> list[str]:
        m = self.manifest
        env = self.environment
        lines = [
            f"{self.path}  ({self.file_size:,} bytes, Amber format {self.format_version}, "
            f"written by Amber {m.get('amber_version', '?')} at {m.get('created', '?')})",
            f"  object      {self.object_type}  [{self.framework}, handler {self.handler!r}]",
            f"  environment Python {env.get('python')} ({env.get('implementation')}, "
            f"{env.get('platform')})",
        ]
        for dist, version in sorted(env.get("packages", {}).items()):
            lines.append(f"              {dist}=={version}")
        sig = self.signature
        if sig:
            lines.append(f"  signature   input {_describe(sig.get('inputs', {}))}")
            for method, out in sig.get("outputs", {}).items():
                lines.append(f"              {method} -> {_describe(out)}")
        else:
            lines.append("  signature   none (save with sample= to record one)")
        probe = m.get("probe")
        if probe:
            lines.append(f"  probe       {', '.join(probe['outputs'])} on the stored sample")
        else:
            lines.append("  probe       none (save with sample= so verify can prove parity)")
        entries = m["entries"]
        stored = sum(e["stored_size"] for e in entries.values())
        raw = sum(e["size"] for e in entries.values())
        codecs = sorted({e["compression"] for e in entries.values()})
        lines.append(
            f"  entries     {counted(len(entries), 'entry', 'entries')} "
            f"({counted(raw, 'byte')}, {stored:,} stored; compression: {', '.join(codecs)})"
        )
        if self.globals:
            lines.append(f"  globals     {len(self.globals)} referenced:")
            lines += [f"              {g}" for g in self.globals]
        else:
            lines.append("  globals     none referenced")
        if self.untrusted:
            lines.append(f"  UNTRUSTED   {', '.join(self.untrusted)} (loading needs trusted=[...])")
        lines += _metadata_lines(self.metadata)
        lines += _registry_lines(self.registry)
        lines.append(f"  signed      {_signed_line(self.signed, self.signer)}")
        return lines


#: The most characters of one metadata value ``inspect`` shows (``--json`` shows it whole),
#: and the most keys.
METADATA_SHOWN = 200
METADATA_KEYS_SHOWN = 20


def _metadata_lines(metadata: dict[str, Any]) -> list[str]:
    """The user metadata, one key a line, each value as JSON shortened to
    :data:`METADATA_SHOWN` characters: a 20 MB string must not fill the terminal."""
    lines = []
    for key in sorted(metadata, key=str)[:METADATA_KEYS_SHOWN]:
        value = metadata[key]
        text = json.dumps(value, sort_keys=True)
        if len(text) > METADATA_SHOWN:
            size = (
                counted(len(value), "character")
                if isinstance(value, str)
                else f"{counted(len(text), 'character')} of JSON"
            )
            text = f"{text[:METADATA_SHOWN]}... ({size}; `amber inspect --json` shows it whole)"
        name = json.dumps(str(key))
        name = name if len(name) <= METADATA_SHOWN else f'{name[:METADATA_SHOWN]}..."'
        lines.append(f"              {name}: {text}")
    more = len(metadata) - METADATA_KEYS_SHOWN
    if more > 0:
        lines.append(
            f"              ... and {counted(more, 'more key')} "
            f"(`amber inspect --json` shows them all)"
        )
    if lines:
        lines[0] = "  metadata" + lines[0][len("  metadata") :]
    return lines


def _registry_lines(registry: dict[str, Any]) -> list[str]:
    """The registry metadata of an exported file, one item a line."""
    if not registry:
        return []
    name, version = registry.get("name"), registry.get("version")
    what = f"{name}" if name is not None else "(no name)"
    if version is not None:
        what += f" version {version}"
    if registry.get("created"):
        what += f", published {registry['created']}"
    if registry.get("created_by"):
        what += f" by {registry['created_by']}"
    lines = [f"  registry    {what}"]
    for key in ("metrics", "tags"):
        table = registry.get(key)
        if isinstance(table, dict) and table:
            pairs = ", ".join(f"{k}={v}" for k, v in sorted(table.items()))
            lines.append(f"              {key:<12} {pairs}")
    if registry.get("description"):
        lines.append(f"              {'description':<12} {registry['description']}")
    return lines


def _signed_line(signed: bool, signer: dict[str, Any] | None) -> str:
    if not signed:
        return "no"
    if not signer or "key_id" not in signer:
        why = (signer or {}).get("malformed", "")
        return f"yes, but its amber.sig is malformed ({why}); a check refuses it"
    from amber.security._signing import describe_binding

    return (
        f"yes, by key {signer['key_id']} for {describe_binding(signer['name'], signer['version'])}"
        f" (unchecked: `amber verify --pubkey KEY.pub` checks it)"
    )


def _printable(lines: list[str]) -> str:
    """The lines joined, with control characters from the file escaped: a manifest's names
    must not move the cursor, recolour or erase the terminal (an UNTRUSTED line, say)."""
    return "\n".join(printable_line(line) for line in lines)


# What can move the cursor, recolour or erase the terminal, or reorder what it shows: control
# characters (C0, DEL, C1), line and paragraph separators, bidirectional embeddings, overrides
# and isolates, and lone surrogates. Other characters that str.isprintable() rejects are text:
# the ideographic space of Japanese, the zero-width (non-)joiners of Persian and of emoji, the
# no-break space, the soft hyphen.
_UNSAFE = frozenset(
    chr(c)
    for span in ((0, 0x20), (0x7F, 0xA0), (0x2028, 0x202A), (0x202A, 0x202F), (0x2066, 0x206A))
    for c in range(*span)
)


def _unsafe(c: str) -> bool:
    return c in _UNSAFE or "\ud800" <= c <= "\udfff"


def printable_line(text: str) -> str:
    """``text`` with the characters that could drive the terminal escaped (``\\r``,
    ``\\x1b``, ``\\n``, ``\\u202e``...): one line that cannot move the cursor, recolour,
    erase or reorder what the terminal shows. Text in any script is left as written."""
    if text.isprintable() or not any(_unsafe(c) for c in text):
        return text
    return "".join(c.encode("unicode_escape").decode() if _unsafe(c) else c for c in text)


def _describe(sig: dict[str, Any], depth: int = 0, *, brief: bool = False) -> str:
    """A signature as text; ``brief``: values by their kind only, ``(ndarray, (ndarray, ...))``."""
    kind = sig.get("kind")
    items = sig.get("items")
    if kind == "sequence" and isinstance(items, list) and depth < 2:
        inner = (_describe(i, depth + 1, brief=brief) for i in items if isinstance(i, dict))
        return "(" + ", ".join(inner) + ")"
    if kind == "mapping" and isinstance(items, dict) and depth < 2:
        named = items.items()
        inner = (
            f"{k}: {_describe(v, depth + 1, brief=brief)}" for k, v in named if isinstance(v, dict)
        )
        return "{" + ", ".join(inner) + "}"
    if brief:
        return str(kind)
    if kind == "dataframe":
        cols = ", ".join(f"{c['name']}:{c['dtype']}" for c in sig.get("columns", []))
        return f"DataFrame[{cols}]"
    if kind == "list":
        return f"list of {'/'.join(sig.get('item_types', []))}"
    if kind == "records":
        keys = sig.get("keys")
        fields = [
            f"{k}:{'/'.join(map(str, t)) if isinstance(t, list) else t}"
            for k, t in (keys.items() if isinstance(keys, dict) else [])
        ]
        more = sig.get("more_keys")
        if type(more) is int and more > 0:
            fields.append(f"+{counted(more, 'more key')}")
        return f"records {{{', '.join(fields)}}}"
    shape = ", ".join("n" if d is None else str(d) for d in sig.get("shape", []))
    return f"{kind} {sig.get('dtype', '')} ({shape})"


@dataclass
class VerifyReport:
    """What ``amber.verify`` checked; it raises instead of returning when a check fails."""

    path: Path
    checks: list[str] = field(default_factory=list)
    environment_changes: list[str] = field(default_factory=list)
    probe: str | None = None

    @property
    def ok(self) -> bool:
        return True

    def __str__(self) -> str:
        lines = [f"{self.path}: OK"]
        lines += [f"  ✓ {c}" for c in self.checks]
        if self.environment_changes:
            lines.append("  environment differs from the one that saved it:")
            lines += [f"    {c}" for c in self.environment_changes]
        if self.probe:
            lines += [f"  {line}" for line in self.probe.splitlines()]
        return _printable(lines)
