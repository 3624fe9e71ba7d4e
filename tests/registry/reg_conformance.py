"""The registry contract, as code: every backend runs these same tests.

In the style of fsspec's ``tests/abstract``: the classes here hold the tests and need a
``backend`` fixture; ``test_registry_backends.py`` subclasses them once per backend (folder +
SQLite, memory:// + SQLite, S3 + PostgreSQL) and provides it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from reg_helpers import IRIS_X, Backend, predicts_like

import amber
from amber.registry import (
    InvalidURI,
    ModelVersion,
    Registry,
    VersionConflict,
)


def _blobs(reg: Registry) -> list[str]:
    return [h for h, _ in reg._store.list()]


class RegistryConformance:
    """What every backend must do."""

    @pytest.fixture
    def reg(self, backend: Backend) -> Any:
        registry = backend.open()
        yield registry
        registry.close()

    # -- push, get, load ---------------------------------------------------------------------
    def test_push_object_then_get_and_load_by_every_uri_form(
        self, reg: Registry, iris_model: Any
    ) -> None:
        v = reg.push(
            "iris",
            iris_model,
            sample=IRIS_X[:8],
            metrics={"accuracy": 0.97, "n": 150},
            tags={"team": "risk"},
            description="logistic regression on iris",
            alias="staging",
        )
        assert isinstance(v, ModelVersion)
        assert (v.name, v.version, v.aliases) == ("iris", 1, ("staging",))
        assert v.metrics == {"accuracy": 0.97, "n": 150} and v.tags == {"team": "risk"}
        assert v.description == "logistic regression on iris"
        assert v.uri == "models:/iris/1" and len(v.hash) == 64 and v.size > 0
        assert v.framework == "scikit-learn" and v.object_type.endswith("LogisticRegression")
        assert v.summary["probe"] is True and v.summary["inputs"]["kind"] == "ndarray"
        for ref in ("models:/iris/1", "models:/iris@staging", "models:/iris/latest", "iris"):
            got = reg.get(ref)
            assert got == v, ref
        assert predicts_like(reg.load("models:/iris@staging"), iris_model)
        assert predicts_like(reg.load("iris/1", probe="always"), iris_model)
        path = reg.path("models:/iris/1")
        assert amber.inspect(path).manifest["metadata"]["metrics"]["accuracy"] == 0.97

    def test_push_existing_file_twice_shares_one_blob(
        self, reg: Registry, artifact: Path, iris_model: Any
    ) -> None:
        v1 = reg.push("iris", artifact)
        v2 = reg.push("iris", str(artifact), alias="production")
        assert (v1.version, v2.version) == (1, 2)
        assert v1.hash == v2.hash and _blobs(reg) == [v1.hash]
        assert v1.metrics == {"accuracy": 0.97}  # taken from the file's metadata
        assert predicts_like(reg.load("models:/iris@production"), iris_model)

    def test_amber_load_resolves_models_uris_through_the_environment(
        self,
        reg: Registry,
        backend: Backend,
        iris_model: Any,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        reg.push("iris", iris_model, alias="production")
        for key, value in backend.env().items():
            monkeypatch.setenv(key, value)
        assert predicts_like(amber.load("models:/iris@production"), iris_model)
        assert predicts_like(amber.load("models:/iris/1"), iris_model)
        assert predicts_like(amber.load("models:/iris/latest"), iris_model)

    def test_a_second_registry_object_sees_the_same_state(
        self, reg: Registry, backend: Backend, iris_model: Any
    ) -> None:
        reg.push("iris", iris_model, alias="production")
        with backend.open() as again:
            assert again.get("models:/iris@production").version == 1
            assert predicts_like(again.load("models:/iris@production"), iris_model)

    # -- versions, models, search ------------------------------------------------------------
    def test_versions_are_consecutive_and_listed_oldest_first(
        self, reg: Registry, artifact: Path
    ) -> None:
        for _ in range(4):
            reg.push("iris", artifact)
        reg.push("wine", artifact)
        assert [v.version for v in reg.versions("iris")] == [1, 2, 3, 4]
        assert [v.version for v in reg.versions("iris", limit=2)] == [3, 4]
        assert reg.get("models:/iris/latest").version == 4
        assert [v.version for v in reg.versions("wine")] == [1]

    def test_a_listing_follows_every_change_from_any_writer(
        self, reg: Registry, backend: Backend, iris_model: Any, tmp_path: Path
    ) -> None:
        """``versions()`` keeps its list under the model's revision and, after a change, reads
        only what is new: after each kind of write made through another Registry object
        (another process, as far as the catalog knows), what ``reg`` lists must equal what a
        newly opened registry reads whole. (Each version holds another file: an import of a
        model that a version already holds would be that version.)"""
        files = []
        for n in range(1, 5):
            files.append(tmp_path / f"m{n}.amber")
            amber.save(iris_model, files[-1], metadata={"n": n})

        def same_as_fresh() -> list[tuple[int, tuple[str, ...], str]]:
            listed = reg.versions("iris")
            with backend.open() as fresh:
                assert [v.__dict__ for v in listed] == [v.__dict__ for v in fresh.versions("iris")]
            return [(v.version, v.aliases, v.tags["n"]) for v in listed]

        reg.push("iris", files[0], tags={"n": "1"})
        reg.push("iris", files[1], tags={"n": "2"})
        first = reg.versions("iris")
        assert reg.versions("iris") == first and reg.versions("iris") is not first
        with backend.open() as other:
            other.push("iris", files[2], tags={"n": "3"})
            assert same_as_fresh() == [(1, (), "1"), (2, (), "2"), (3, (), "3")]
            assert [v.version for v in reg.versions("iris", limit=2)] == [2, 3]
            other.set_alias("iris", "production", 2)
            assert same_as_fresh() == [(1, (), "1"), (2, ("production",), "2"), (3, (), "3")]
            other.set_alias("iris", "production", 3)
            other.set_alias("iris", "a-first", 3)
            assert same_as_fresh()[2] == (3, ("a-first", "production"), "3")
            other.remove_alias("iris", "production")
            other.remove_alias("iris", "a-first")
            assert [a for _, a, _ in same_as_fresh()] == [(), (), ()]
            for v in (1, 3):
                other.export(f"models:/iris/{v}", tmp_path / f"v{v}.amber")
            # the newest row replaced under the same number (SQLite may hand its id out again)
            other.delete("iris", 3)
            other.import_(tmp_path / "v3.amber")
            assert same_as_fresh() == [(1, (), "1"), (2, (), "2"), (3, (), "3")]
            other.delete("iris", 3)
            assert same_as_fresh() == [(1, (), "1"), (2, (), "2")]
            other.import_(tmp_path / "v3.amber")  # the number it had, not a new one
            other.push("iris", files[3], tags={"n": "4"}, alias="production")
            assert same_as_fresh()[2:] == [(3, (), "3"), (4, ("production",), "4")]
            other.set_alias("iris", "staging", 1)
            other.delete("iris", 1, force=True)
            assert same_as_fresh() == [(2, (), "2"), (3, (), "3"), (4, ("production",), "4")]
            other.import_(tmp_path / "v1.amber")  # an older number, read after newer ones
            assert [v for v, _, _ in same_as_fresh()] == [1, 2, 3, 4]
        with pytest.raises(amber.ModelNotFound, match=r"no model named 'wine'.*models there: iris"):
            reg.versions("wine")

    def test_a_versions_metrics_and_tags_are_read_only(self, reg: Registry, artifact: Path) -> None:
        """Listed versions are shared between callers: changing one in place is refused."""
        reg.push("iris", artifact, metrics={"accuracy": 0.9}, tags={"team": "risk"})
        v = reg.versions("iris")[0]
        with pytest.raises(TypeError, match=r"read-only.*dict\(v\.metrics\)"):
            v.metrics["accuracy"] = 1.0
        with pytest.raises(TypeError, match="read-only"):
            v.tags.update(team="growth")
        mine = dict(v.metrics) | {"f1": 0.8}
        assert mine == {"accuracy": 0.9, "f1": 0.8}
        assert json.loads(json.dumps(v.to_dict()))["tags"] == {"team": "risk"}
        assert reg.versions("iris")[0].metrics == {"accuracy": 0.9}

    def test_models_lists_names_counts_latest_and_aliases(
        self, reg: Registry, artifact: Path
    ) -> None:
        assert reg.models() == []
        reg.push("iris", artifact, alias="production")
        reg.push("iris", artifact)
        reg.push("wine", artifact)
        models = {m.name: m for m in reg.models()}
        assert sorted(models) == ["iris", "wine"]
        assert models["iris"].versions == 2 and models["iris"].latest == 2
        assert models["iris"].aliases == {"production": 1} and models["wine"].aliases == {}

    def test_search_by_tag_name_glob_and_alias(self, reg: Registry, artifact: Path) -> None:
        reg.push("fraud-eu", artifact, tags={"team": "risk", "region": "eu"})
        reg.push("fraud-us", artifact, tags={"team": "risk"}, alias="production")
        reg.push("churn", artifact, tags={"team": "growth"})
        assert [v.name for v in reg.search(tag="team=risk")] == ["fraud-eu", "fraud-us"]
        assert [v.name for v in reg.search(tag="region")] == ["fraud-eu"]
        assert [v.name for v in reg.search(name="fraud-*")] == ["fraud-eu", "fraud-us"]
        assert [v.name for v in reg.search(alias="production")] == ["fraud-us"]
        assert reg.search(name="fraud_*") == []  # '_' is literal, not a wildcard
        found = reg.search(tag="team=risk", name="*-us")
        assert [(v.name, v.aliases) for v in found] == [("fraud-us", ("production",))]

    def test_search_by_name_matches_case_exactly_and_sets(
        self, reg: Registry, artifact: Path
    ) -> None:
        for name in ("iris", "IRIS", "Iris_a", "irisXa", "bx1", "b_1"):
            reg.push(name, artifact)
        assert [v.name for v in reg.search(name="iris")] == ["iris"]
        assert [v.name for v in reg.search(name="IRIS*")] == ["IRIS"]
        assert [v.name for v in reg.search(name="iris_a")] == []
        assert [v.name for v in reg.search(name="Iris?a")] == ["Iris_a"]
        assert [v.name for v in reg.search(name="[ab]*")] == ["b_1", "bx1"]
        assert [v.name for v in reg.search(name="[!bI]*")] == ["iris", "irisXa"]

    # -- aliases -----------------------------------------------------------------------------
    def test_aliases_move_and_their_history_is_kept(self, reg: Registry, artifact: Path) -> None:
        for _ in range(3):
            reg.push("iris", artifact)
        assert reg.set_alias("iris", "production", 1) is None
        assert reg.set_alias("iris", "production", 3) == 1
        reg.set_alias("iris", "staging", 2)
        assert reg.aliases("iris") == {"production": 3, "staging": 2}
        assert reg.get("models:/iris@production").aliases == ("production",)
        assert reg.remove_alias("iris", "staging") == 2
        history = [(c.alias, c.version, c.previous) for c in reg.alias_history("iris")]
        assert history == [
            ("production", 1, None),
            ("production", 3, 1),
            ("staging", 2, None),
            ("staging", None, 2),
        ]
        assert [c.version for c in reg.alias_history("iris", "production")] == [1, 3]
        assert all(c.changed_by and c.changed for c in reg.alias_history("iris"))

    def test_alias_errors_name_what_exists(self, reg: Registry, artifact: Path) -> None:
        reg.push("iris", artifact, alias="production")
        with pytest.raises(amber.ModelNotFound, match=r"no alias 'prod'.*@production -> 1"):
            reg.get("models:/iris@prod")
        with pytest.raises(amber.ModelNotFound, match=r"no version 7.*versions: 1 \(latest 1"):
            reg.set_alias("iris", "staging", 7)
        with pytest.raises(amber.ModelNotFound, match="no alias 'staging'"):
            reg.remove_alias("iris", "staging")
        with pytest.raises(InvalidURI, match="reserved"):
            reg.set_alias("iris", "latest", 1)
        with pytest.raises(InvalidURI, match="not valid"):
            reg.set_alias("iris", "9lives", 1)

    # -- errors ------------------------------------------------------------------------------
    def test_model_not_found_lists_the_models_that_exist(
        self, reg: Registry, artifact: Path
    ) -> None:
        with pytest.raises(amber.ModelNotFound, match=r"'iris'.*is empty"):
            reg.get("models:/iris/1")
        reg.push("iris", artifact)
        reg.push("wine", artifact)
        with pytest.raises(amber.ModelNotFound, match="models there: iris, wine") as err:
            reg.load("models:/irs/latest")
        assert isinstance(err.value, KeyError)  # existing `except KeyError` clauses still work
        with pytest.raises(amber.ModelNotFound, match=r"no version 3.*1 \(latest 1"):
            reg.get("models:/wine/3")

    @pytest.mark.parametrize(
        ("uri", "message"),
        [
            ("models:/iris", "names no version or alias"),
            ("models:/iris/0", "not a positive integer"),
            ("models:/iris/v3", "not a positive integer"),
            ("models:/iris/2147483648", r"beyond 2147483647 \(2\*\*31-1\), the highest"),
            ("models:/iris/9223372036854775808", r"beyond 2147483647 \(2\*\*31-1\)"),
            ("models:/ir is/1", "model name 'ir is' is not valid"),
            ("models:/iris@", "alias '' is not valid"),
            ("models:/iris@a@b", "more than one"),
            ("model:/iris/1", "not a model URI"),
            ("s3://bucket/iris", "not a model URI"),
        ],
    )
    def test_bad_uris_are_refused_with_the_grammar(
        self, reg: Registry, uri: str, message: str
    ) -> None:
        with pytest.raises(InvalidURI, match=message) as err:
            reg.get(uri)
        assert isinstance(err.value, ValueError)

    def test_bad_push_arguments_are_refused(self, reg: Registry, artifact: Path) -> None:
        with pytest.raises(TypeError, match="metrics must be finite numbers"):
            reg.push("iris", artifact, metrics={"accuracy": float("nan")})
        with pytest.raises(TypeError, match="tags must be a dict"):
            reg.push("iris", artifact, tags={"team": 3})
        with pytest.raises(TypeError, match="sample= and compress= apply"):
            reg.push("iris", artifact, sample=IRIS_X[:3])
        with pytest.raises(FileNotFoundError, match="no such file"):
            reg.push("iris", artifact.with_name("missing.amber"))
        assert reg.models() == []

    # -- delete and gc -----------------------------------------------------------------------
    def test_delete_refuses_an_aliased_version_unless_forced(
        self, reg: Registry, artifact: Path, iris_model: Any
    ) -> None:
        reg.push("iris", artifact, alias="production")
        reg.push("iris", iris_model)
        with pytest.raises(VersionConflict, match="@production points to"):
            reg.delete("iris", 1)
        deleted = reg.delete("iris", 1, force=True)
        assert deleted.version == 1
        assert reg.aliases("iris") == {}
        assert reg.alias_history("iris")[-1].version is None
        assert [v.version for v in reg.versions("iris")] == [2]
        assert reg.push("iris", artifact).version == 3  # numbers are never reused

    def test_gc_removes_only_unreferenced_blobs(
        self, reg: Registry, artifact: Path, iris_model: Any
    ) -> None:
        keep = reg.push("iris", iris_model)
        drop = reg.push("iris", artifact)
        shared = reg.push("wine", artifact)
        assert reg.gc().removed == []
        reg.delete("iris", drop.version)
        assert reg.gc().removed == []  # still used by wine/1
        reg.delete("wine", shared.version)
        kept = reg.gc()  # deleted a moment ago: a load may still be about to read it
        assert kept.removed == [] and kept.kept_deleted == 1
        assert "1 of versions deleted within the grace period" in str(kept)
        report = reg.gc(grace=0)
        assert report.removed == [drop.hash] and report.freed_bytes == drop.size
        assert _blobs(reg) == [keep.hash]
        assert predicts_like(reg.load("models:/iris/1"), iris_model)

    def test_gc_keeps_the_blob_of_an_upload_in_flight(self, reg: Registry, artifact: Path) -> None:
        from amber.registry._store import file_blake3

        blob_hash = file_blake3(artifact)
        reg._prepare_write()
        reg.catalog.begin_upload(blob_hash)  # a push that uploaded and has not committed yet
        reg._store.put(artifact, blob_hash, owned=False)
        report = reg.gc()
        assert report.removed == [] and report.kept_pending == 1
        assert reg.gc(grace=0).removed == [blob_hash]  # the pusher died: its blob may go

    # -- export, import, signatures ----------------------------------------------------------
    def test_export_writes_one_file_with_registry_metadata(
        self, reg: Registry, iris_model: Any, tmp_path: Path
    ) -> None:
        reg.push("iris", iris_model, metrics={"accuracy": 0.97}, tags={"team": "risk"})
        reg.push("iris", iris_model, alias="production", description="second")
        out = tmp_path / "iris-v2.amber"
        assert reg.export("models:/iris@production", out).version == 2
        meta = amber.inspect(out).manifest["registry"]
        assert (meta["name"], meta["version"], meta["description"]) == ("iris", 2, "second")
        assert predicts_like(amber.load(out), iris_model)
        amber.verify(out)

    def test_export_never_writes_into_the_registry(
        self, reg: Registry, iris_model: Any, tmp_path: Path
    ) -> None:
        reg.push("iris", iris_model)
        mv = reg.get("models:/iris/1")
        blob = reg._blob(mv, mv.uri)  # (a remote registry's: its cached copy)
        link = tmp_path / "link.amber"
        link.symlink_to(blob)
        targets = [blob, blob.parent / "new.amber", link]
        if reg.catalog.sqlite_path is not None:
            catalog = reg.catalog.sqlite_path
            targets += [catalog, catalog.with_name(catalog.name + "-wal")]
        for target in targets:
            with pytest.raises(ValueError, match=r"inside registry .* outside the registry"):
                reg.export(mv.uri, target)
        assert not (blob.parent / "new.amber").exists()
        reg.verify(mv.uri)
        assert predicts_like(reg.load(mv.uri), iris_model)
        assert reg.export(mv.uri, tmp_path / "out.amber").version == 1

    def test_import_keeps_the_version_and_is_idempotent(
        self, reg: Registry, iris_model: Any, tmp_path: Path
    ) -> None:
        for i in range(3):  # three models (their files differ): each version its own
            reg.push("iris", iris_model, tags={"team": "risk"}, description=f"push {i}")
        out = tmp_path / "iris-v3.amber"
        reg.export("models:/iris/3", out)
        with Registry(tmp_path / "elsewhere") as other:
            v = other.import_(out, alias="production")
            assert (v.name, v.version, v.tags) == ("iris", 3, {"team": "risk"})
            assert other.import_(out).version == 3  # the same file again: nothing new
            assert other.push("iris", out).version == 4
            renamed = other.import_(out, name="iris-copy")
            assert (renamed.name, renamed.version) == ("iris-copy", 1)
            assert predicts_like(other.load("models:/iris@production"), iris_model)
        reg.delete("iris", 3)
        assert reg.import_(out).version == 3  # back where it was exported from

    def test_import_of_another_file_under_a_taken_version_is_refused(
        self, reg: Registry, iris_model: Any, other_model: Any, tmp_path: Path
    ) -> None:
        reg.push("iris", iris_model)
        out = tmp_path / "iris-v1.amber"
        reg.export("models:/iris/1", out)
        with Registry(tmp_path / "elsewhere") as other:
            other.push("iris", other_model)
            with pytest.raises(VersionConflict, match=r"already exists.*another name"):
                other.import_(out)

    def test_import_never_gives_a_deleted_number_to_another_model(
        self, reg: Registry, iris_model: Any, other_model: Any, tmp_path: Path
    ) -> None:
        reg.push("iris", iris_model)
        reg.push("iris", iris_model)
        theirs = tmp_path / "theirs-v1.amber"
        with Registry(tmp_path / "elsewhere") as other:
            other.push("iris", other_model, description="another team's model")
            other.export("models:/iris/1", theirs)
        reg.delete("iris", 1)
        with pytest.raises(
            VersionConflict,
            match=r"iris version 1 was used by a version deleted on .* UTC .*another model "
            r"than this file.*keep_version=False, --new-version",
        ):
            reg.import_(theirs)
        assert [v.version for v in reg.versions("iris")] == [2]
        v = reg.import_(theirs, keep_version=False)
        assert (v.version, v.description) == (3, "another team's model")

    def test_importing_a_model_already_there_adds_nothing_and_moves_the_alias(
        self, reg: Registry, iris_model: Any, tmp_path: Path
    ) -> None:
        pushed = reg.push("iris", iris_model, alias="production")
        out = tmp_path / "iris-v1.amber"
        reg.export("models:/iris/1", out)
        # back into the registry it came from: the export differs only in its registry field
        assert reg.import_(out).version == 1
        with Registry(tmp_path / "elsewhere") as other:
            first = other.import_(out, name="iris-eu")
            again = other.import_(out, name="iris-eu", alias="staging")  # a re-run sync job
            assert (first.version, again.version, again.aliases) == (1, 1, ("staging",))
            assert [v.version for v in other.versions("iris-eu")] == [1]
            other.import_(out)
            moved = other.import_(out, alias="production")
            assert (moved.version, moved.aliases) == (1, ("production",))
            assert other.aliases("iris") == {"production": 1}
            assert [(c.alias, c.version) for c in other.alias_history("iris")] == [
                ("production", 1)
            ]
            assert other.import_(out, alias="production").aliases == ("production",)
            assert len(other.alias_history("iris")) == 1  # not moved again: nothing changed
        assert [v.hash for v in reg.versions("iris")] == [pushed.hash]

    def test_signed_push_loads_only_with_a_trusted_key(
        self, reg: Registry, iris_model: Any, keys: dict[str, Path]
    ) -> None:
        reg.push("iris", iris_model, signing_key=keys["alice"], alias="production")
        reg.push("iris", iris_model)  # unsigned
        good = reg.load("models:/iris@production", trusted_keys=[keys["alice.pub"]])
        assert predicts_like(good, iris_model)
        with pytest.raises(amber.IntegrityError, match="not one of the trusted keys"):
            reg.load("models:/iris/1", trusted_keys=[keys["mallory.pub"]])
        with pytest.raises(amber.IntegrityError, match="is not signed"):
            reg.load("models:/iris/2", trusted_keys=[keys["alice.pub"]])
        report = reg.verify("models:/iris/1", trusted_keys=[keys["alice.pub"]])
        assert any("iris version 1" in line for line in report.checks)

    def test_a_signature_cannot_be_moved_to_another_version(
        self, reg: Registry, backend: Backend, iris_model: Any, keys: dict[str, Path]
    ) -> None:
        old = reg.push("iris", iris_model, signing_key=keys["alice"])
        reg.push("iris", iris_model, signing_key=keys["alice"])
        # Someone with write access to the catalog points version 2 at version 1's artifact
        # and copies its signature: the signature binds version 1, so the load is refused.
        engine = sa.create_engine(reg.catalog.url)
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE amber_versions SET blob_hash=:h, manifest_hash=:m, signature=:s "
                    "WHERE version=2"
                ),
                {"h": old.hash, "m": old.manifest_hash, "s": old.signature},
            )
        engine.dispose()
        with pytest.raises(amber.IntegrityError, match="does not match the manifest"):
            reg.load("models:/iris/2", trusted_keys=[keys["alice.pub"]])
        assert predicts_like(reg.load("models:/iris/2"), iris_model)  # unsigned loads still work

    def test_a_signed_file_binds_its_name_and_version(
        self, reg: Registry, artifact: Path, keys: dict[str, Path]
    ) -> None:
        amber.sign(artifact, keys["alice"], name="iris", version=1)
        reg.push("iris", artifact)
        reg.push("iris", artifact)  # the same signed file offered as version 2
        reg.push("wine", artifact)
        trusted = [keys["alice.pub"]]
        reg.load("models:/iris/1", trusted_keys=trusted)
        with pytest.raises(amber.IntegrityError, match="for 'iris' version 1, not 'iris' versi"):
            reg.load("models:/iris/2", trusted_keys=trusted)
        with pytest.raises(amber.IntegrityError, match="for 'iris' version 1, not 'wine' versi"):
            reg.load("models:/wine/1", trusted_keys=trusted)

    def test_export_of_a_file_signed_before_its_push_never_drops_catalog_metadata(
        self, reg: Registry, artifact: Path, keys: dict[str, Path], tmp_path: Path
    ) -> None:
        amber.sign(artifact, keys["alice"], name="iris", version=1)
        reg.push("iris", artifact)  # metrics from the file's own metadata: nothing to lose
        reg.export("models:/iris/1", tmp_path / "v1.amber")
        assert (tmp_path / "v1.amber").read_bytes() == artifact.read_bytes()
        reg.push("iris", artifact, metrics={"acc": 0.9}, tags={"team": "risk"}, description="d")
        with pytest.raises(
            VersionConflict,
            match=r"models:/iris/2 was pushed as a file already signed .*without the metrics "
            r"\{'acc': 0.9\}, tags \{'team': 'risk'\}, description 'd'.*signing_key=",
        ):
            reg.export("models:/iris/2", tmp_path / "v2.amber")
        assert not (tmp_path / "v2.amber").exists()
        reg.export("models:/iris/2", tmp_path / "v2.amber", signing_key=keys["alice"])
        with Registry(tmp_path / "elsewhere") as other:
            v = other.import_(tmp_path / "v2.amber")
            assert (v.version, v.metrics, v.tags, v.description) == (
                2,
                {"acc": 0.9},
                {"team": "risk"},
                "d",
            )
            other.load("models:/iris/2", trusted_keys=[keys["alice.pub"]])

    def test_signed_export_verifies_and_survives_import(
        self, reg: Registry, iris_model: Any, keys: dict[str, Path], tmp_path: Path
    ) -> None:
        reg.push("iris", iris_model, signing_key=keys["alice"])
        out = tmp_path / "iris-v1.amber"
        reg.export("models:/iris/1", out)
        report = amber.verify(out, trusted_keys=[keys["alice.pub"]])
        assert any("signed by trusted key" in line for line in report.checks)
        assert predicts_like(amber.load(out, trusted_keys=[keys["alice.pub"]]), iris_model)
        with pytest.raises(amber.IntegrityError, match="not one of the trusted keys"):
            amber.load(out, trusted_keys=[keys["mallory.pub"]])
        with Registry(tmp_path / "elsewhere") as other:
            other.import_(out)
            again = other.load("models:/iris/1", trusted_keys=[keys["alice.pub"]])
            assert predicts_like(again, iris_model)
            other.export("models:/iris/1", tmp_path / "again.amber")
            assert (tmp_path / "again.amber").read_bytes() == out.read_bytes()
        # a re-export signed with another key replaces the signature
        reg.export("models:/iris/1", tmp_path / "m.amber", signing_key=keys["mallory"])
        amber.verify(tmp_path / "m.amber", trusted_keys=[keys["mallory.pub"]])

    # -- integrity ---------------------------------------------------------------------------
    def test_an_altered_artifact_is_refused(self, reg: Registry, iris_model: Any) -> None:
        reg.push("iris", iris_model)
        corrupt(reg.path("models:/iris/1"))
        with pytest.raises(amber.IntegrityError, match="fails its xxh3-128 check"):
            reg.load("models:/iris/1")

    def test_a_catalog_naming_a_path_instead_of_a_digest_is_refused(
        self, reg: Registry, iris_model: Any
    ) -> None:
        reg.push("iris", iris_model)
        engine = sa.create_engine(reg.catalog.url)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE amber_versions SET blob_hash='../../../etc/passwd'"))
        engine.dispose()
        with pytest.raises(amber.IntegrityError, match="not a BLAKE3 digest"):
            reg.load("models:/iris/1")


class RemoteConformance:
    """What every remote (fsspec) backend must also do: cache downloads by hash."""

    def test_loads_come_from_the_cache_after_the_first_download(
        self, backend: Backend, iris_model: Any, artifact: Path
    ) -> None:
        with backend.open() as reg:
            v = reg.push("iris", artifact)  # a file we did not write: not cached by the push
            cached = Path(backend.cache or "") / "blobs" / v.hash[:2] / f"{v.hash}.amber"
            assert not cached.exists()
            assert predicts_like(reg.load("models:/iris/1"), iris_model)
            assert cached.is_file()
            reg._store.delete(v.hash)  # the remote copy is gone: the cache alone serves it
            assert predicts_like(reg.load("models:/iris/1"), iris_model)

    def test_a_pushed_object_is_cached_at_once(self, backend: Backend, iris_model: Any) -> None:
        with backend.open() as reg:
            v = reg.push("iris", iris_model)
            cached = Path(backend.cache or "") / "blobs" / v.hash[:2] / f"{v.hash}.amber"
            assert cached.is_file()

    def test_a_corrupt_cached_copy_is_refused(self, backend: Backend, iris_model: Any) -> None:
        with backend.open() as reg:
            reg.push("iris", iris_model)
            corrupt(reg.path("models:/iris/1"))
            with pytest.raises(amber.IntegrityError, match="fails its xxh3-128 check"):
                reg.load("models:/iris/1")

    def test_a_remote_registry_needs_a_catalog(self, backend: Backend) -> None:
        with pytest.raises(InvalidURI, match="needs a catalog database"):
            Registry(backend.location, storage_options=backend.storage_options)


def corrupt(path: Path) -> None:
    """Flip one byte inside the pickle stream of an artifact (a read-only blob or cache copy)."""
    from amber.artifact._reader import ArtifactReader

    with ArtifactReader(path) as reader:
        stream = bytes(reader.raw_entry(reader.manifest["payload"]["stream"]))
    data = bytearray(path.read_bytes())
    at = data.find(stream) + len(stream) // 2
    data[at] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def catalog_rows(reg: Registry, table: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(reg.catalog.url)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {table}"))]
    engine.dispose()
    return rows


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
