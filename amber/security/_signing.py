"""Ed25519 signatures of artifacts: ``amber.sig``, what it covers, and the check on load.

``amber.sig`` is a small canonical JSON document (``docs/FORMAT.md`` section 6)::

    {"key_id": "3f1c...", "name": "iris", "scheme": "amber-ed25519-v1",
     "signature": "<base64>", "version": 3}

The signed message is ``b"amber-ed25519-v1\\n"`` + the canonical JSON of the document without
``signature`` + ``b"\\n"`` + the exact bytes of ``amber.json``. The manifest holds every entry's
BLAKE3 digest, so the signature covers the whole artifact; the document binds the model name and
registry version, so a validly signed older version cannot be passed off as a newer one.

Checking a signature always checks every entry's BLAKE3 digest too (``verify_all(strong=True)``):
a signature over a manifest is worth nothing if the entries are not the ones it lists.

The ``cryptography`` package is imported only when a key is made, read, or used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from amber.errors import IntegrityError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from amber.artifact._reader import ArtifactReader

__all__ = [
    "SCHEME",
    "PublicKeyLike",
    "SignatureInfo",
    "check_reader",
    "check_signature",
    "claimed_signer",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "make_signature",
    "parse_signature",
    "reader_check",
    "sign",
]

SCHEME = "amber-ed25519-v1"
MAX_SIGNATURE_BYTES = 4096
_DOC_KEYS = {"scheme", "key_id", "name", "version", "signature"}

# A key given to a load or verify: a key file's path, its PEM (or raw 32-byte) content, or a key.
PublicKeyLike = Union[str, os.PathLike[str], bytes, "Ed25519PublicKey"]
PrivateKeyLike = Union[str, os.PathLike[str], bytes, "Ed25519PrivateKey"]


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "signing needs the 'cryptography' package: pip install 'amber[registry]'"
        ) from exc
    return ed25519, serialization


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- keys ----------------------------------------------------------------------------------------
def generate_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as ``(private_pem, public_pem)`` (PKCS#8 and SubjectPublicKeyInfo).

    Examples
    --------
    >>> private_pem, public_pem = generate_key()
    >>> private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    True
    """
    ed25519, serialization = _crypto()
    private = ed25519.Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def _read_key_source(source: object, what: str) -> tuple[bytes, str]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            return path.read_bytes(), str(path)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no such {what} file: {str(path)!r}; make a key pair with `amber keygen`"
            ) from None
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), f"the {what} bytes given"
    raise TypeError(
        f"expected a {what}: a file path, PEM bytes or a cryptography Ed25519 key, got a "
        f"{type(source).__name__}"
    )


def load_public_key(source: PublicKeyLike) -> Ed25519PublicKey:
    """An Ed25519 public key from a file path, PEM or OpenSSH bytes, 32 raw bytes, or a key."""
    ed25519, serialization = _crypto()
    if isinstance(source, ed25519.Ed25519PublicKey):
        return source
    if isinstance(source, ed25519.Ed25519PrivateKey):
        raise TypeError(
            "a private key was given where a public key is expected; pass the .pub file "
            "(never hand out the private key)"
        )
    data, where = _read_key_source(source, "public key")
    try:
        if len(data) == 32:
            return ed25519.Ed25519PublicKey.from_public_bytes(data)
        if data.lstrip().startswith(b"ssh-ed25519"):
            key = serialization.load_ssh_public_key(data.strip())
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError(
            f"{where} is not an Ed25519 public key ({exc}); give the .pub file that "
            f"`amber keygen` wrote"
        ) from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError(
            f"{where} holds a {type(key).__name__}, not an Ed25519 public key; Amber signs with "
            f"Ed25519 only (make a key pair with `amber keygen`)"
        )
    return key


def load_private_key(source: PrivateKeyLike) -> Ed25519PrivateKey:
    """An Ed25519 private key from a file path, PEM bytes (unencrypted PKCS#8), or a key."""
    ed25519, serialization = _crypto()
    if isinstance(source, ed25519.Ed25519PrivateKey):
        return source
    data, where = _read_key_source(source, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{where} is not an unencrypted PEM private key ({exc}); give the .key file that "
            f"`amber keygen` wrote"
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(
            f"{where} holds a {type(key).__name__}, not an Ed25519 private key; make one with "
            f"`amber keygen`"
        )
    return key


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """A short, stable name for a key: the first 16 hex digits of SHA-256 of its raw bytes."""
    _, serialization = _crypto()
    public = key.public_key() if hasattr(key, "public_key") else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# -- the signature document ----------------------------------------------------------------------
@dataclass(frozen=True)
class SignatureInfo:
    """A checked signature: which trusted key made it, and the name and version it binds."""

    key_id: str
    name: str | None
    version: int | None

    @property
    def bound(self) -> str:
        """What the signature binds, in words: ``"iris version 3"``, ``"version 3, no name"``."""
        return describe_binding(self.name, self.version)

    def __str__(self) -> str:
        return f"signed by trusted key {self.key_id} ({self.bound})"


def describe_binding(name: object, version: object) -> str:
    """A signature's binding in words (``repr`` for what is not a plain name or number)."""
    shown_name = name if isinstance(name, str) and name.isprintable() else repr(name)
    if version is not None and type(version) is not int:
        version = repr(version)  # a document made by hand: "2" is not 2
    if name is None and version is None:
        return "no registry name or version"
    if version is None:
        return f"{shown_name}, no version"
    if name is None:
        return f"version {version}, no name"
    return f"{shown_name} version {version}"


def claimed_signer(sig: bytes | None) -> dict[str, Any] | None:
    """What an ``amber.sig`` says of itself, unchecked (``amber inspect`` shows it; only a check
    with the signer's public key proves it): ``{"key_id", "name", "version", "checked":
    False}``, or ``{"malformed": why}``; None without a signature."""
    if sig is None:
        return None
    try:
        doc = parse_signature(sig, "amber.sig")
    except IntegrityError as exc:
        return {"malformed": str(exc), "checked": False}
    return {
        "key_id": doc["key_id"],
        "name": doc["name"],
        "version": doc["version"],
        "checked": False,
    }


def _message(doc: dict[str, Any], manifest_bytes: bytes) -> bytes:
    unsigned = {k: v for k, v in doc.items() if k != "signature"}
    return SCHEME.encode() + b"\n" + _canonical(unsigned) + b"\n" + manifest_bytes


def _check_binding(name: str | None, version: int | None) -> None:
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"name must be a non-empty string or None, got {name!r}")
    if version is not None and (
        not isinstance(version, int) or isinstance(version, bool) or version < 1
    ):
        raise TypeError(f"version must be a positive integer or None, got {version!r}")
    if name is None and version is None:
        return
    # a binding is checked against a registry's names and versions: one that no registry can
    # hold would make a signature that every registry-bound check refuses
    from amber.registry._errors import InvalidURI
    from amber.registry._uri import check_name, check_version

    try:
        if name is not None:
            check_name(name)
        if version is not None:
            check_version(version)
    except InvalidURI as exc:
        raise ValueError(f"cannot sign for that name and version: {exc}") from None


def make_signature(
    manifest_bytes: bytes,
    key: PrivateKeyLike,
    *,
    name: str | None = None,
    version: int | None = None,
) -> bytes:
    """The ``amber.sig`` content for ``manifest_bytes``, binding ``name`` and ``version``."""
    _check_binding(name, version)
    private = load_private_key(key)
    doc: dict[str, Any] = {
        "key_id": key_id(private),
        "name": name,
        "scheme": SCHEME,
        "version": version,
    }
    doc["signature"] = base64.b64encode(private.sign(_message(doc, manifest_bytes))).decode()
    return _canonical(doc)


def parse_signature(sig: bytes, source: str) -> dict[str, Any]:
    if len(sig) > MAX_SIGNATURE_BYTES:
        raise IntegrityError(
            f"{source}: amber.sig is {len(sig)} bytes, more than a signature can be "
            f"({MAX_SIGNATURE_BYTES}); the file was altered. Re-sign it with `amber sign`"
        )
    try:
        doc = json.loads(sig)
    except (UnicodeDecodeError, ValueError):
        doc = None
    if (
        not isinstance(doc, dict)
        or set(doc) != _DOC_KEYS
        or doc.get("scheme") != SCHEME
        or not isinstance(doc.get("key_id"), str)
        or not isinstance(doc.get("signature"), str)
        or not isinstance(doc.get("name"), (str, type(None)))
        or not (doc.get("version") is None or type(doc.get("version")) is int)
        # the canonical bytes only: another spelling of the same document is not what was signed
        or sig != _canonical(doc)
    ):
        raise IntegrityError(
            f"{source}: amber.sig is not an {SCHEME} signature document (expected the keys "
            f"{sorted(_DOC_KEYS)}); it was altered or made by a newer Amber. Re-sign it with "
            f"`amber sign`, or upgrade Amber"
        )
    return doc


def _decode_public(keys: Iterable[PublicKeyLike]) -> dict[str, Ed25519PublicKey]:
    if isinstance(keys, (str, bytes, os.PathLike)):
        raise TypeError(
            f"trusted_keys must be a list of keys, not one {type(keys).__name__}; write "
            f"trusted_keys=[{keys!r}]"
        )
    decoded = {}
    for k in keys:
        public = load_public_key(k)
        decoded[key_id(public)] = public
    if not decoded:
        raise ValueError(
            "trusted_keys is empty, so no signature could ever be accepted; pass the public "
            "key files (.pub) of the signers you trust"
        )
    return decoded


def check_signature(
    manifest_bytes: bytes,
    sig: bytes | None,
    trusted_keys: Iterable[PublicKeyLike],
    *,
    source: str,
    name: str | None = None,
    version: int | None = None,
) -> SignatureInfo:
    """Check ``sig`` over ``manifest_bytes`` against trusted keys; raise ``IntegrityError``.

    With ``name`` and ``version`` given, the signature must bind exactly those.
    """
    _crypto()
    from cryptography.exceptions import InvalidSignature

    keys = _decode_public(trusted_keys)
    if sig is None:
        raise IntegrityError(
            f"{source} is not signed, and a signature from a trusted key is required "
            f"(trusted keys: {', '.join(sorted(keys))}). Ask its publisher for a signed copy, "
            f"or sign it yourself with `amber sign FILE --key KEY` if you vouch for it"
        )
    doc = parse_signature(sig, source)
    public = keys.get(doc["key_id"])
    if public is None:
        raise IntegrityError(
            f"{source} is signed by key {doc['key_id']!r}, which is not one of the trusted keys "
            f"({', '.join(sorted(keys))}); add that signer's public key to trusted_keys "
            f"(--pubkey FILE.pub on the command line) only if you trust them"
        )
    try:
        raw = base64.b64decode(doc["signature"], validate=True)
        public.verify(raw, _message(doc, manifest_bytes))
    except (binascii.Error, TypeError, ValueError, InvalidSignature):
        raise IntegrityError(
            f"{source}: the signature by key {doc['key_id']!r} does not match the manifest "
            f"(the file, its name or its version were altered after signing); do not use it, "
            f"get the file again from its publisher"
        ) from None
    if (name is not None and doc["name"] != name) or (
        version is not None and doc["version"] != version
    ):
        raise IntegrityError(
            f"{source} is validly signed by key {doc['key_id']!r}, but for "
            f"{doc['name']!r} version {doc['version']!r}, not {name!r} version {version!r}: "
            f"another model or an older version was put in its place. Do not use it; publish "
            f"and sign the intended version"
        )
    return SignatureInfo(doc["key_id"], doc["name"], doc["version"])


def check_reader(
    reader: ArtifactReader,
    trusted_keys: Iterable[PublicKeyLike],
    *,
    name: str | None = None,
    version: int | None = None,
    detached: Sequence[bytes] = (),
) -> SignatureInfo:
    """Require a valid signature on an open artifact, and check every entry's BLAKE3 digest.

    The embedded ``amber.sig`` is tried, then any ``detached`` signature documents (a registry
    keeps those in its catalog); the first that a trusted key made and that binds ``name`` and
    ``version`` wins, otherwise the first failure is raised.
    """
    source = repr(str(reader.path))
    keys = list(trusted_keys) if not isinstance(trusted_keys, (str, bytes)) else trusted_keys
    candidates: list[bytes | None] = [reader.raw_signature(), *detached]
    present: list[bytes | None] = [c for c in candidates if c is not None] or [None]
    first: IntegrityError | None = None
    info: SignatureInfo | None = None
    for sig in present:
        try:
            info = check_signature(
                reader.manifest_bytes, sig, keys, source=source, name=name, version=version
            )
            break
        except IntegrityError as exc:
            first = first or exc
    if info is None:
        raise first or IntegrityError(f"{source}: no signature could be checked")
    reader.verify_all(strong=True)
    return info


def reader_check(trusted_keys: Iterable[PublicKeyLike]) -> Callable[[ArtifactReader], object]:
    """A check for ``amber.load(..., trusted_keys=...)``; the keys are read (and vetted) now."""
    keys = list(_decode_public(trusted_keys).values())

    def check(reader: ArtifactReader) -> SignatureInfo:
        return check_reader(reader, keys)

    return check


# -- signing files -------------------------------------------------------------------------------
def sign(
    path: str | os.PathLike[str],
    key: PrivateKeyLike,
    *,
    name: str | None = None,
    version: int | None = None,
    target: str | os.PathLike[str] | None = None,
) -> SignatureInfo:
    """Sign an artifact in place (or into ``target``), binding a model name and version.

    ``name`` and ``version`` default to the artifact's registry metadata (written by
    ``Registry.export``); given explicitly, they are recorded there. Every entry's BLAKE3 digest
    is checked before signing: Amber never signs bytes it has not verified.

    Examples
    --------
    >>> sign("iris.amber", "me.key", name="iris", version=3)  # doctest: +SKIP
    """
    from amber.artifact._reader import ArtifactReader, NotAnArtifact
    from amber.artifact._rewrite import rewrite

    _check_binding(name, version)
    private = load_private_key(key)
    try:
        reader = ArtifactReader(path)
    except NotAnArtifact:
        from amber.security._foreign import converted_name, unconvertible

        said = unconvertible(path)
        if said is not None:
            raise NotAnArtifact(f"{said}; only .amber artifacts are signed") from None
        source = Path(path)
        out = converted_name(source)
        raise NotAnArtifact(
            f"{str(source)!r} is not an Amber artifact (a pickle or joblib file, or another "
            f"format), and only artifacts are signed: convert it first (`amber convert "
            f"{source} {out}`), then sign the result (`amber sign {out} --key KEY`)"
        ) from None
    with reader:
        reader.verify_all(strong=True)
        registry = dict(reader.manifest.get("registry") or {})
    if name is None:
        name = registry.get("name")
    if version is None:
        version = registry.get("version")
    if name is not None:
        registry["name"] = name
    if version is not None:
        registry["version"] = version

    def update(manifest: dict[str, Any]) -> dict[str, Any]:
        if registry:
            manifest["registry"] = registry
        return manifest

    def signer(raw: bytes) -> bytes:
        return make_signature(raw, private, name=name, version=version)

    rewrite(path, target if target is not None else path, update=update, signer=signer)
    return SignatureInfo(key_id(private), name, version)
