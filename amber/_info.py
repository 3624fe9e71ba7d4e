"""What ``save`` returns and ``inspect`` shows: an artifact's manifest, readable."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    def has_probe(self) -> bool:
        return "probe" in self.manifest

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "file_size": self.file_size,
            "signed": self.signed,
            **self.manifest,
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
            f"  entries     {len(entries)} ({raw:,} bytes, {stored:,} stored; "
            f"compression: {', '.join(codecs)})"
        )
        lines.append(f"  globals     {len(self.globals)} referenced:")
        lines += [f"              {g}" for g in self.globals]
        if self.untrusted:
            lines.append(f"  UNTRUSTED   {', '.join(self.untrusted)} (loading needs trusted=[...])")
        if self.metadata:
            lines.append(f"  metadata    {json.dumps(self.metadata, sort_keys=True)}")
        lines.append(f"  signed      {'yes' if self.signed else 'no'}")
        return lines


def _printable(lines: list[str]) -> str:
    """The lines joined, with control characters from the file escaped: a manifest's names
    must not move the cursor, recolour or erase the terminal (an UNTRUSTED line, say)."""
    return "\n".join(
        "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in line)
        for line in lines
    )


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
