"""Signatures on files: ``amber.sign``, ``amber.verify``/``amber.load`` with ``trusted_keys``.

Tampering is done for real: bytes flipped in the file, a manifest rewritten under an old
signature, a signature document edited. Every refusal is an ``IntegrityError`` whose message
says what happened and what to do.
"""

from __future__ import annotations

import base64
import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from reg_conformance import corrupt
from reg_helpers import IRIS_X, predicts_like
from sklearn.linear_model import LinearRegression

import amber
from amber.artifact._reader import ArtifactReader
from amber.artifact._writer import artifact_writer
from amber.security._signing import SCHEME, key_id, load_public_key


@pytest.fixture
def signed(artifact: Path, keys: dict[str, Path]) -> Path:
    amber.sign(artifact, keys["alice"], name="iris", version=3)
    return artifact


def test_sign_then_verify_and_load_with_the_trusted_key(
    signed: Path, keys: dict[str, Path], iris_model: Any
) -> None:
    report = amber.verify(signed, trusted_keys=[keys["alice.pub"]])
    alice = key_id(load_public_key(keys["alice.pub"]))
    assert f"signed by trusted key {alice} (iris version 3)" in report.checks
    assert predicts_like(amber.load(signed, trusted_keys=[keys["alice.pub"]]), iris_model)
    assert amber.inspect(signed).signed
    assert amber.inspect(signed).manifest["registry"] == {"name": "iris", "version": 3}
    # a signed file still loads without any key: signatures are opt-in per load
    assert predicts_like(amber.load(signed), iris_model)


def test_the_signature_document_is_what_format_md_describes(signed: Path) -> None:
    with ArtifactReader(signed) as reader:
        raw = reader.raw_signature()
    assert raw is not None
    doc = json.loads(raw)
    assert sorted(doc) == ["key_id", "name", "scheme", "signature", "version"]
    assert (doc["scheme"], doc["name"], doc["version"]) == (SCHEME, "iris", 3)
    assert len(base64.b64decode(doc["signature"])) == 64  # an Ed25519 signature
    assert raw == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def test_an_unsigned_file_is_refused_when_a_key_is_required(
    artifact: Path, keys: dict[str, Path]
) -> None:
    with pytest.raises(amber.IntegrityError, match=r"is not signed.*amber sign FILE --key"):
        amber.load(artifact, trusted_keys=[keys["alice.pub"]])
    with pytest.raises(amber.IntegrityError, match="is not signed"):
        amber.verify(artifact, trusted_keys=[keys["alice.pub"]])


def test_a_signature_by_an_untrusted_key_is_refused(signed: Path, keys: dict[str, Path]) -> None:
    alice = key_id(load_public_key(keys["alice.pub"]))
    with pytest.raises(amber.IntegrityError, match=f"signed by key '{alice}', which is not one"):
        amber.load(signed, trusted_keys=[keys["mallory.pub"]])
    # trusting both keys is fine
    amber.load(signed, trusted_keys=[keys["mallory.pub"], keys["alice.pub"]])


def test_a_manifest_changed_under_an_old_signature_is_refused(
    signed: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    with ArtifactReader(signed) as reader:
        old_sig = reader.raw_signature()
        manifest = {k: v for k, v in reader.manifest.items() if k != "entries"}
        manifest["metadata"] = {"metrics": {"accuracy": 1.0}}  # a better-looking claim
        forged = tmp_path / "forged.amber"
        with artifact_writer(forged) as writer:
            for name, record in reader.entries.items():
                writer.add_stored(name, reader.raw_entry(name), record)
            writer.finish(manifest, signer=lambda raw: old_sig or b"")
    with pytest.raises(amber.IntegrityError, match="does not match the manifest"):
        amber.verify(forged, trusted_keys=[keys["alice.pub"]])


def test_a_signature_document_edited_to_another_version_is_refused(
    signed: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    with ArtifactReader(signed) as reader:
        doc = json.loads(reader.raw_signature() or b"")
    doc["version"] = 4  # claim the signature is for a newer version
    edited = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    from amber.artifact._rewrite import rewrite

    out = tmp_path / "edited.amber"
    rewrite(signed, out, signer=lambda raw: edited)
    with pytest.raises(amber.IntegrityError, match="does not match the manifest"):
        amber.load(out, trusted_keys=[keys["alice.pub"]])


def test_a_flipped_byte_in_a_signed_file_is_refused(signed: Path, keys: dict[str, Path]) -> None:
    corrupt(signed)
    with pytest.raises(amber.IntegrityError, match="fails its blake3 check"):
        amber.verify(signed, trusted_keys=[keys["alice.pub"]])
    with pytest.raises(amber.IntegrityError, match="fails its blake3 check"):
        amber.load(signed, trusted_keys=[keys["alice.pub"]])


def test_garbage_in_amber_sig_is_refused(artifact: Path, keys: dict[str, Path]) -> None:
    from amber.artifact._rewrite import rewrite

    rewrite(artifact, artifact, signer=lambda raw: b"not a signature")
    with pytest.raises(amber.IntegrityError, match="not an amber-ed25519-v1 signature document"):
        amber.load(artifact, trusted_keys=[keys["alice.pub"]])


def test_a_pickle_cannot_satisfy_a_signature_policy(
    tmp_path: Path, iris_model: Any, keys: dict[str, Path]
) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(iris_model))
    with pytest.raises(amber.IntegrityError, match="cannot carry a signature"):
        amber.load(path, trusted_keys=[keys["alice.pub"]])


def test_bad_keys_are_refused_with_what_to_pass(
    signed: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(TypeError, match=r"must be a list of keys.*trusted_keys=\["):
        amber.load(signed, trusted_keys=str(keys["alice.pub"]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trusted_keys is empty"):
        amber.load(signed, trusted_keys=[])
    with pytest.raises(FileNotFoundError, match="amber keygen"):
        amber.load(signed, trusted_keys=[tmp_path / "nope.pub"])
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        amber.load(signed, trusted_keys=[keys["alice"]])  # the private key file
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        amber.sign(signed, keys["alice.pub"])


def test_public_keys_as_bytes_and_objects(signed: Path, keys: dict[str, Path]) -> None:
    pem = keys["alice.pub"].read_bytes()
    key = load_public_key(pem)
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for form in (pem, key, raw):
        amber.verify(signed, trusted_keys=[form])


def test_signing_into_another_file_keeps_the_original(
    artifact: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "signed.amber"
    info = amber.sign(artifact, keys["alice"], target=out)
    assert (info.name, info.version) == (None, None)
    assert not amber.inspect(artifact).signed and amber.inspect(out).signed
    report = amber.verify(out, trusted_keys=[keys["alice.pub"]])
    assert any("no registry name" in line for line in report.checks)
    amber.load(out, trusted_keys=[keys["alice.pub"]], probe="always")
    assert amber.load(out).predict(IRIS_X[:3]).shape == (3,)


@pytest.mark.parametrize(
    "field", [("key_id", ["x"]), ("key_id", {"a": 1}), ("signature", 5), ("name", [1])]
)
def test_a_signature_document_with_fields_of_other_types_is_refused(
    signed: Path, keys: dict[str, Path], field: tuple[str, Any]
) -> None:
    from amber.artifact._rewrite import rewrite

    with ArtifactReader(signed) as reader:
        doc = json.loads(reader.raw_signature() or b"")
    doc[field[0]] = field[1]
    edited = json.dumps(doc).encode()
    rewrite(signed, signed, signer=lambda raw: edited)
    for call in (amber.load, amber.verify):
        with pytest.raises(amber.IntegrityError, match="not an amber-ed25519-v1 signature"):
            call(signed, trusted_keys=[keys["alice.pub"]])


@pytest.mark.parametrize("document", [b"junk", b"", b'{"key_id": ["x"]}'])
def test_a_malformed_signature_document_fails_verify_even_without_a_key(
    signed: Path, document: bytes
) -> None:
    """Without a key nobody can say who signed a file, but a signature entry that is no
    signature document at all is damage, and verify says so instead of "signed"."""
    from amber.artifact._rewrite import rewrite

    rewrite(signed, signed, signer=lambda raw: document)
    with pytest.raises(amber.IntegrityError, match="not an amber-ed25519-v1 signature"):
        amber.verify(signed)
    assert "malformed" in str(amber.inspect(signed))


def test_a_well_formed_signature_verifies_as_unchecked_without_a_key(signed: Path) -> None:
    assert "signed (pass a public key to check the signature)" in amber.verify(signed).checks


@pytest.mark.parametrize(
    ("spelling", "version"),
    [("indented", 3), ("canonical", "3"), ("canonical", True)],
    ids=["indented", "version-as-string", "version-as-bool"],
)
def test_a_validly_signed_document_of_another_shape_is_refused(
    signed: Path, keys: dict[str, Path], spelling: str, version: Any
) -> None:
    """FORMAT.md 6.1: the document is canonical JSON and its version an integer or null. One
    signed over the same message but spelled otherwise, or binding "3" instead of 3, is
    refused, although its Ed25519 signature verifies."""
    from amber.artifact._rewrite import rewrite
    from amber.security._signing import _message, load_private_key

    with ArtifactReader(signed) as reader:
        doc = json.loads(reader.raw_signature() or b"")
        manifest = reader.manifest_bytes
    doc["version"] = version
    del doc["signature"]
    private = load_private_key(keys["alice"])
    doc["signature"] = base64.b64encode(private.sign(_message(doc, manifest))).decode()
    if spelling == "indented":
        edited = json.dumps(doc, indent=2).encode()
    else:
        edited = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    rewrite(signed, signed, signer=lambda raw: edited)
    for call in (amber.load, amber.verify):
        with pytest.raises(amber.IntegrityError, match="not an amber-ed25519-v1 signature"):
            call(signed, trusted_keys=[keys["alice.pub"]])


def _padded_entry(data: bytes) -> tuple[int, int]:
    """Offset and length of the first local header's padding field body (id 0xD935) that has
    a body, in an artifact's bytes."""
    pos = 0
    while data[pos : pos + 4] == b"PK\x03\x04":
        name_len, extra_len = struct.unpack_from("<HH", data, pos + 26)
        size = struct.unpack_from("<I", data, pos + 22)[0]
        extra = pos + 30 + name_len
        field_id, body = struct.unpack_from("<HH", data, extra)
        if field_id == 0xD935 and body:
            return extra + 4, body
        pos = extra + extra_len + size
    raise AssertionError("no padded entry")


def test_zip_bytes_outside_every_digest_are_covered_by_verify_and_signed_loads(
    signed: Path, keys: dict[str, Path], iris_model: Any, tmp_path: Path
) -> None:
    """Versions, time stamps, attributes and padding: the zip layer's own bytes, which no digest
    covers. A signed file whose bytes there changed is refused by verify and by a signed load;
    an unsigned load, which checks only what it reads, still gets the same model."""
    data = signed.read_bytes()
    cd_start = struct.unpack("<I", data[-6:-2])[0]
    pad_at, _ = _padded_entry(data)
    cases = {
        "local version needed": (4, b"\x14\x01"),
        "local time stamp": (10, b"\x01\x00"),
        "padding byte": (pad_at + 1, b"X"),
        "central version made by": (cd_start + 4, b"\x2d\x00"),
        "central internal attributes": (cd_start + 36, b"\x01\x00"),
        "central external attributes": (cd_start + 38, b"\x00\x00\xff\x81"),
    }
    trusted = [keys["alice.pub"]]
    for what, (at, new) in cases.items():
        assert data[at : at + len(new)] != new, what
        path = tmp_path / f"{what.replace(' ', '_')}.amber"
        path.write_bytes(data[:at] + new + data[at + len(new) :])
        for check, keys_given in (
            (amber.verify, None),
            (amber.verify, trusted),
            (amber.load, trusted),
        ):
            with pytest.raises(amber.IntegrityError, match="differs from what Amber writes"):
                check(path, trusted_keys=keys_given)
        assert predicts_like(amber.load(path), iris_model), what
    # the writer's own bytes pass, before and after signing
    amber.verify(signed, trusted_keys=trusted)


@pytest.mark.parametrize(
    ("binding", "said"),
    [({"name": "bad name"}, "model name 'bad name' is not valid"),
     ({"name": "iris", "version": 2**31}, "from 1 to 2147483647")],
)  # fmt: skip
def test_a_binding_no_registry_can_hold_is_not_signed(
    artifact: Path, keys: dict[str, Path], binding: dict[str, Any], said: str
) -> None:
    before = artifact.read_bytes()
    with pytest.raises(ValueError, match=said):
        amber.sign(artifact, keys["alice"], **binding)
    assert artifact.read_bytes() == before


def test_a_damaged_crc_of_the_signature_entry_is_refused_by_verify(
    signed: Path, keys: dict[str, Path], iris_model: Any
) -> None:
    """Every byte of a signed file is checked by verify but the time stamp: the CRC-32 of
    amber.sig was the exception (any zip tool's test reported the file corrupted; verify said
    OK)."""
    data = bytearray(signed.read_bytes())
    with zipfile.ZipFile(signed) as archive:
        local = archive.getinfo("amber.sig").header_offset
    central = data.rfind(b"PK\x01\x02")  # the signature's record: the directory's last
    assert data[central + 46 : central + 46 + len("amber.sig")] == b"amber.sig"
    for at in (local + 14, central + 16):
        data[at : at + 4] = struct.pack("<I", 0xDEADBEEF)
    signed.write_bytes(bytes(data))
    for trusted in (None, [keys["alice.pub"]]):
        with pytest.raises(amber.IntegrityError, match=r"signature entry \(amber.sig\).*CRC-32"):
            amber.verify(signed, trusted_keys=trusted)
    assert predicts_like(amber.load(signed), iris_model)  # what a load reads is intact


@pytest.mark.parametrize("parts", ["no parts table", "parts of 1 MiB"])
def test_export_keeps_the_parts_table_that_a_detached_signature_covers(
    tmp_path: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch, parts: str
) -> None:
    """A push's detached signature covers the stored manifest plus its registry field, which
    export writes; export re-made the parts' digests instead of keeping them, so a file saved
    before parts tables existed (one added) or with parts of another size (re-cut into 8 MiB)
    was exported with a manifest its own signature did not cover."""
    import amber.artifact._digest as digest_module
    import amber.artifact._writer as writer_module

    model = LinearRegression().fit(IRIS_X, IRIS_X[:, 0])
    with monkeypatch.context() as patch:
        if parts == "no parts table":  # as Amber wrote before 2026-12-01
            model.big_ = np.zeros(17 << 17)  # 17 MiB: one entry that gets parts today
            patch.setattr(digest_module, "PARTS_FROM", 1 << 62)
        else:  # another writer's choice (FORMAT.md allows 1 MiB to 1 GiB)
            model.big_ = np.arange(3 << 17, dtype=np.float64)  # 3 MiB: none today
            for module in (digest_module, writer_module):
                patch.setattr(module, "PART_SIZE", 1 << 20)
            patch.setattr(digest_module, "PARTS_FROM", 2 << 20)
        amber.save(model, tmp_path / "m.amber")
    stored = amber.inspect(tmp_path / "m.amber").manifest.get("xxh3_128_parts")
    assert (stored is None) == (parts == "no parts table")
    trusted = [keys["alice.pub"]]
    with amber.Registry(tmp_path / "reg") as reg:
        reg.push("big", tmp_path / "m.amber", signing_key=keys["alice"])
        reg.load("models:/big/1", trusted_keys=trusted)
        reg.export("models:/big/1", tmp_path / "out.amber")
    assert amber.inspect(tmp_path / "out.amber").manifest.get("xxh3_128_parts") == stored
    report = amber.verify(tmp_path / "out.amber", trusted_keys=trusted)
    assert any("signed by trusted key" in line for line in report.checks)
    np.testing.assert_array_equal(amber.load(tmp_path / "out.amber").big_, model.big_)
