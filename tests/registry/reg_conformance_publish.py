"""The publishing contract, as code: every backend runs these same tests.

What a push or an import takes from a file (and refuses, never drops), what the catalog can
store (the same refusals on SQLite and PostgreSQL), the range of version numbers, a damaged blob
repaired by pushing its file again, and imports of a model the registry already holds (FORMAT.md
section 6.2), signed or not. ``test_registry_backends.py`` runs them on every backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from reg_conformance import _blobs
from reg_helpers import IRIS_X, Backend, predicts_like

import amber
from amber.artifact._rewrite import rewrite
from amber.registry import InvalidURI, Registry, VersionConflict
from amber.security._signing import key_id, load_public_key

MAX_VERSION = 2**31 - 1


def carrying(source: Path, target: Path, registry: dict[str, Any]) -> Path:
    """A copy of ``source`` whose manifest carries this ``registry`` field (as an export)."""
    rewrite(source, target, update=lambda m: {**m, "registry": registry})
    return target


def damage(reg: Registry, blob_hash: str) -> None:
    """Flip one byte in the middle of a stored blob, keeping its size (bit rot, a bad disk)."""
    store: Any = reg._store
    if store.remote:
        key = store._key(blob_hash)
        data = bytearray(store.fs.cat_file(key))
        data[len(data) // 2] ^= 0xFF
        store.fs.pipe_file(key, bytes(data))
        return
    path = store.blob_path(blob_hash)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))


class PublishConformance:
    """What every backend must do when publishing. Needs the ``reg`` and ``backend`` fixtures
    of :class:`reg_conformance.RegistryConformance`."""

    # -- what a file carries -----------------------------------------------------------------
    def test_a_files_metrics_or_tags_that_cannot_be_recorded_are_refused_not_dropped(
        self, reg: Registry, iris_model: Any, tmp_path: Path
    ) -> None:
        bad_metric = tmp_path / "bad-metric.amber"
        amber.save(
            iris_model,
            bad_metric,
            metadata={"metrics": {"accuracy": 0.97, "passed_gate": True}, "description": "d"},
        )
        with pytest.raises(
            TypeError,
            match=r"metric 'passed_gate' is True; metrics must be finite numbers \(.*"
            r"bad-metric.amber' carries it in its metadata: pass metrics= to push to record "
            r"others instead \(metrics=\{\} records none\), or save the file again",
        ):
            reg.push("iris", bad_metric)
        with pytest.raises(
            TypeError,
            match=r"metric 'passed_gate' is True.*bad-metric.amber' carries it in its metadata: "
            r"save the file again with finite numbers .*or push it with metrics= instead",
        ):
            reg.import_(bad_metric, name="iris")
        assert reg.models() == [] and _blobs(reg) == []
        # metrics given to push replace the file's: nothing is refused, nothing else dropped
        v = reg.push("iris", bad_metric, metrics={"accuracy": 0.97})
        assert (dict(v.metrics), v.description) == ({"accuracy": 0.97}, "d")

        bad_tag = tmp_path / "bad-tag.amber"
        amber.save(iris_model, bad_tag, metadata={"tags": {"team": "risk", "epochs": 10}})
        for call in (lambda: reg.push("wine", bad_tag), lambda: reg.import_(bad_tag, name="wine")):
            with pytest.raises(
                TypeError, match=r"tag 'epochs' is 10: tags must be a dict .*bad-tag.amber' carr"
            ):
                call()
        assert reg.push("wine", bad_tag, tags={"team": "risk"}).tags == {"team": "risk"}

    def test_push_and_import_take_the_same_metadata_from_a_file(
        self, reg: Registry, iris_model: Any, tmp_path: Path
    ) -> None:
        """An exported file's ``registry`` field wins over its user metadata, for both."""
        with Registry(tmp_path / "source") as source:
            source.push("iris", iris_model, metrics={"acc": 0.9}, tags={"team": "risk"})
            out = tmp_path / "v1.amber"
            source.export("models:/iris/1", out)
        # the file's own metadata says otherwise: the registry field is what the version said
        rewrite(out, out, update=lambda m: {**m, "metadata": {"metrics": {"acc": 0.1}}})
        pushed = reg.push("pushed", out)
        imported = reg.import_(out, name="imported")
        assert (pushed.metrics, pushed.tags, pushed.description) == (
            imported.metrics,
            imported.tags,
            imported.description,
        )
        assert (dict(pushed.metrics), dict(pushed.tags)) == ({"acc": 0.9}, {"team": "risk"})

    # -- what the catalog can store ----------------------------------------------------------
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"tags": {"k": "x\x00y"}}, r"the value of tag 'k': 'x\\x00y' contains a NUL"),
            ({"tags": {"k\x00": "v"}}, r"tag key 'k\\x00' contains a NUL"),
            ({"description": "x\x00y"}, r"description 'x\\x00y' contains a NUL character"),
            ({"metrics": {"a\x00": 1.0}}, r"metric name 'a\\x00' contains a NUL"),
            ({"tags": {"k": "\udc80"}}, r"the value of tag 'k': '\\udc80' is not valid Unicode"),
            ({"tags": {"\udc80": "v"}}, r"tag key '\\udc80' is not valid Unicode"),
            ({"description": "caf\udce9"}, r"description 'caf\\udce9' is not valid Unicode.*"),
        ],
    )
    def test_text_the_catalog_cannot_store_is_refused_before_anything_is_stored(
        self, reg: Registry, artifact: Path, kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            reg.push("iris", artifact, **kwargs)
        assert reg.models() == [] and _blobs(reg) == []

    def test_a_file_whose_manifest_the_catalog_cannot_store_is_refused(
        self, reg: Registry, artifact: Path, tmp_path: Path
    ) -> None:
        long_type = tmp_path / "long.amber"
        rewrite(artifact, long_type, update=lambda m: {**m, "object_type": "pkg." + "x" * 450})
        with pytest.raises(
            ValueError, match=r"long.amber': the manifest's object_type is 454 characters long"
        ):
            reg.push("iris", long_type)
        nul = tmp_path / "nul.amber"
        rewrite(artifact, nul, update=lambda m: {**m, "metadata": {"description": "a\x00b"}})
        for call in (lambda: reg.import_(nul, name="iris"), lambda: reg.push("iris", nul)):
            with pytest.raises(
                ValueError,
                match=r"description 'a\\x00b' contains a NUL .*: remove it; '.*nul.amber' carries "
                r"it in its metadata",
            ):
                call()
        assert reg.models() == [] and _blobs(reg) == []
        assert reg.push("iris", artifact).version == 1  # the catalog is fine

    # -- version numbers ---------------------------------------------------------------------
    def test_version_numbers_run_from_1_to_2_31_minus_1_on_every_backend(
        self, reg: Registry, artifact: Path, tmp_path: Path
    ) -> None:
        reg.push("iris", artifact)
        beyond = r"version must be an integer from 1 to 2147483647 \(2\*\*31-1\), got 2147483648"
        with pytest.raises(InvalidURI, match=beyond):
            reg.set_alias("iris", "prod", 2**31)
        with pytest.raises(InvalidURI, match=beyond):
            reg.delete("iris", 2**31)
        with pytest.raises(InvalidURI, match="beyond 2147483647"):
            reg.get("models:/iris/2147483648")
        with pytest.raises(amber.ModelNotFound, match=r"no version 2147483647.*versions: 1"):
            reg.get(f"models:/iris/{MAX_VERSION}")
        for huge in (2**31, 2**63 - 2):
            far = carrying(artifact, tmp_path / f"{huge}.amber", {"name": "wine", "version": huge})
            with pytest.raises(
                InvalidURI,
                match=rf"carries registry version {huge}, which cannot be kept here.*"
                r"keep_version=False \(--new-version\)",
            ):
                reg.import_(far)
            assert reg.import_(far, keep_version=False).version == 1  # the same model: v1
        # the highest number can be kept (the counter stays in range); then no number is left
        top = carrying(artifact, tmp_path / "top.amber", {"name": "big", "version": MAX_VERSION})
        assert reg.import_(top).version == MAX_VERSION
        assert [x.version for x in reg.versions("big")] == [MAX_VERSION]
        assert reg.get(f"models:/big/{MAX_VERSION}").version == MAX_VERSION
        exhausted = r"big has used every version number up to 2147483647 \(2\*\*31-1\)"
        with pytest.raises(VersionConflict, match=exhausted):
            reg.push("big", artifact)
        reg.delete("big", MAX_VERSION)
        with pytest.raises(VersionConflict, match=exhausted):  # a deleted number is not reused
            reg.push("big", artifact)
        assert reg.import_(top).version == MAX_VERSION  # but the same model may come back

    def test_a_limit_beyond_what_sql_takes_lists_everything(
        self, reg: Registry, artifact: Path
    ) -> None:
        reg.push("iris", artifact)
        reg.push("iris", artifact)
        for limit in (2**63, 2**100):
            assert [v.version for v in reg.versions("iris", limit=limit)] == [1, 2]
            assert len(reg.search(limit=limit)) == 2

    # -- damaged blobs -----------------------------------------------------------------------
    def test_pushing_a_file_again_repairs_its_damaged_blob(
        self, reg: Registry, artifact: Path, iris_model: Any
    ) -> None:
        v1 = reg.push("iris", artifact)
        damage(reg, v1.hash)
        with pytest.raises(amber.IntegrityError) as err:
            reg.load(v1.uri)
        if reg._store.remote:  # checked on download: it says what happened and what to do
            assert "the stored blob is damaged, or the download was" in str(err.value)
            assert "push the original file again" in str(err.value)
            assert "nothing was published" not in str(err.value)
        v2 = reg.push("iris", artifact)  # the stored copy is hashed, found damaged, replaced
        assert v2.hash == v1.hash and _blobs(reg) == [v1.hash]
        assert predicts_like(reg.load(v2.uri), iris_model)
        assert predicts_like(reg.load(v1.uri), iris_model)  # the same blob: repaired for both

    # -- imports of a model already there ----------------------------------------------------
    def test_an_import_keeping_its_number_finds_the_model_under_another_number(
        self, reg: Registry, iris_model: Any, other_model: Any, tmp_path: Path
    ) -> None:
        """FORMAT.md 6.2: an import whose model a version already holds is that version."""
        with Registry(tmp_path / "source") as source:
            source.push("iris", other_model, description="first")
            source.push("iris", other_model, description="second")
            source.push("iris", iris_model, description="third")
            out = tmp_path / "iris-v3.amber"
            source.export("models:/iris/3", out)
        reg.push("iris", other_model, description="ours")
        first = reg.import_(out, keep_version=False)  # version 3 there arrives as 2 here
        again = reg.import_(out, alias="prod")  # it carries version 3: still the model of 2
        assert (first.version, again.version, again.aliases) == (2, 2, ("prod",))
        assert [v.version for v in reg.versions("iris")] == [1, 2]
        assert reg.import_(out, keep_version=False).version == 2

    def test_an_import_signed_with_a_key_signs_the_version_already_there(
        self,
        reg: Registry,
        backend: Backend,
        iris_model: Any,
        keys: dict[str, Path],
        tmp_path: Path,
    ) -> None:
        source = Registry(tmp_path / "source")
        source.push("iris", iris_model, sample=IRIS_X[:4])
        plain, signed = tmp_path / "plain.amber", tmp_path / "signed.amber"
        source.export("models:/iris/1", plain)
        source.export("models:/iris/1", signed, signing_key=keys["alice"])
        source.close()
        trusted = [keys["alice.pub"]]
        reg.import_(plain)
        with backend.open() as reader:
            assert not reader.versions("iris")[0].signed  # a listing kept by another reader
            # the file's own signature cannot be attached: refused, not dropped silently
            with pytest.raises(
                VersionConflict,
                match=r"models:/iris/1 in registry .* already holds the model of this file, "
                r"unsigned; the file's own signature \(key \w+\) covers its manifest.*would drop "
                r"it.*signing_key=.*or delete models:/iris/1",
            ):
                reg.import_(signed)
            with pytest.raises(amber.IntegrityError, match="is not signed"):
                reg.load("models:/iris/1", trusted_keys=trusted)
            # signing_key=: the version already there is signed here, binding iris/1
            v = reg.import_(plain, signing_key=keys["alice"], alias="prod")
            assert (v.version, v.signed, v.aliases) == (1, True, ("prod",))
            assert predicts_like(reg.load("models:/iris@prod", trusted_keys=trusted), iris_model)
            assert reader.versions("iris")[0].signed  # the other reader sees it at once
            assert reg.import_(signed).version == 1  # its key is now on the version: nothing lost
            assert reg.import_(plain, signing_key=keys["alice"]).signature == v.signature
            with pytest.raises(VersionConflict, match=r"carries a signature made here by key"):
                reg.import_(plain, signing_key=keys["mallory"])
        out = tmp_path / "again.amber"
        reg.export("models:/iris/1", out)
        amber.verify(out, trusted_keys=trusted)

    def test_verify_with_a_key_says_only_what_it_checked(
        self, reg: Registry, iris_model: Any, keys: dict[str, Path], tmp_path: Path
    ) -> None:
        source = Registry(tmp_path / "source")
        source.push("iris", iris_model, sample=IRIS_X[:4])
        source.export("models:/iris/1", tmp_path / "signed.amber", signing_key=keys["alice"])
        source.close()
        reg.import_(tmp_path / "signed.amber")  # the artifact carries its own signature
        reg.push("wine", iris_model, signing_key=keys["alice"])  # a detached one, made at push
        alice = key_id(load_public_key(keys["alice.pub"]))
        for uri in ("models:/iris/1", "models:/wine/1"):
            checks = reg.verify(uri, trusted_keys=[keys["alice.pub"]]).checks
            name = uri.split("/")[1]
            said = [c for c in checks if "signed" in c]  # one line: the signature it checked
            assert said == [f"{uri}: signed by trusted key {alice} ({name} version 1)"], checks
        unchecked = reg.verify("models:/wine/1").checks
        assert any("signed at push by key" in c and "pass a public key" in c for c in unchecked)
