"""The files the command line writes and what it says about them: convert's target, keygen's
pair, a signature's binding, an exported file's registry metadata, and the error messages a
user meets. Each test runs ``python -m amber`` as a user runs it."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.svm import SVC

import amber
from amber.security._signing import key_id, load_private_key, load_public_key

X, Y = load_iris(return_X_y=True)
AMBER = [sys.executable, "-m", "amber"]
README = Path(__file__).resolve().parents[1] / "README.md"


def run(
    *args: str, cwd: Path | None = None, unprivileged: bool = False
) -> subprocess.CompletedProcess[str]:
    """``amber ARGS``; ``unprivileged``: with file permissions applying (root loses the
    capabilities that bypass them)."""
    prefix: list[str] = []
    if unprivileged and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: file permissions do not apply")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run(
        [*prefix, *AMBER, *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def forest() -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=5, random_state=0).fit(X, Y)


@pytest.fixture
def legacy(tmp_path: Path, forest: RandomForestClassifier) -> Path:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(forest, protocol=5))
    return path


# -- 1, 8: convert -------------------------------------------------------------------------------
def test_a_convert_that_fails_verification_keeps_the_previous_target(tmp_path: Path) -> None:
    """convert saved the target, then verified it: a failed verify left the failing file in
    place of the previous, good target."""
    random_model = DummyClassifier(strategy="stratified").fit(X, Y)  # random_state=None
    source = tmp_path / "random.pkl"
    source.write_bytes(pickle.dumps(random_model))
    np.save(tmp_path / "sample.npy", X[::5])
    target = tmp_path / "target.amber"
    amber.save(SVC().fit(X, Y), target, sample=X[:8])
    os.chmod(target, 0o640)
    before = digest(target)
    failed = run("convert", str(source), str(target), "--sample", str(tmp_path / "sample.npy"))
    assert failed.returncode == 1 and "ParityError" in failed.stderr
    assert digest(target) == before and amber.inspect(target).object_type.endswith("SVC")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random.pkl", "sample.npy", target.name]
    assert "'target.amber' was left as it was" in failed.stderr.replace(str(tmp_path) + "/", "")
    assert ".convert" not in failed.stderr  # the temporary file is not what the user named
    fresh = tmp_path / "fresh.amber"
    failed = run("convert", str(source), str(fresh), "--sample", str(tmp_path / "sample.npy"))
    assert failed.returncode == 1 and not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random.pkl", "sample.npy", target.name]


def test_a_convert_that_succeeds_replaces_the_target_keeping_its_mode(
    tmp_path: Path, legacy: Path
) -> None:
    target = tmp_path / "rf.amber"
    amber.save(SVC().fit(X, Y), target)
    os.chmod(target, 0o640)
    converted = run("convert", str(legacy), str(target))
    assert converted.returncode == 0, converted.stderr
    assert f"{target}  (" in converted.stdout and ".convert" not in converted.stdout
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert amber.inspect(target).object_type.endswith("RandomForestClassifier")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pkl", "rf.amber"]


def test_convert_refuses_an_artifact_and_its_own_source_as_target(
    tmp_path: Path, legacy: Path
) -> None:
    """An .amber source was re-saved without its metadata, probe and compression, and
    `convert model.pkl model.pkl` turned the pickle into a zip in place."""
    artifact = tmp_path / "m.amber"
    amber.save(SVC().fit(X, Y), artifact, sample=X[:8], metadata={"a": 1}, compress="zstd")
    before = digest(artifact)
    refused = run("convert", str(artifact), str(artifact))
    assert refused.returncode == 2
    assert "is already an Amber artifact" in refused.stderr
    assert "amber verify" in refused.stderr and "amber.save(" in refused.stderr
    assert digest(artifact) == before
    assert run("convert", str(artifact), str(tmp_path / "other.amber")).returncode == 2
    assert not (tmp_path / "other.amber").exists()
    pickled = digest(legacy)
    refused = run("convert", str(legacy), str(legacy))
    assert refused.returncode == 2
    assert "is the source file itself" in refused.stderr and "model.amber" in refused.stderr
    assert digest(legacy) == pickled


# -- 7: keygen -----------------------------------------------------------------------------------
def test_keygen_force_writes_a_private_key_0600(tmp_path: Path) -> None:
    """A replaced PREFIX.key kept the old file's mode: 0644 left the new key world-readable."""
    assert run("keygen", "--out", "k", cwd=tmp_path).returncode == 0
    os.chmod(tmp_path / "k.key", 0o644)
    replaced = run("keygen", "--out", "k", "--force", cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    private = load_private_key(tmp_path / "k.key")
    assert key_id(private) == key_id(load_public_key(tmp_path / "k.pub"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key", "k.pub"]


def test_keygen_writes_both_keys_or_neither(tmp_path: Path) -> None:
    """The .key was replaced before the .pub write failed: the old private key was lost and
    the pair no longer matched."""
    assert run("keygen", "--out", "r", cwd=tmp_path).returncode == 0
    os.chmod(tmp_path / "r.pub", 0o444)
    key, pub = digest(tmp_path / "r.key"), digest(tmp_path / "r.pub")
    refused = run("keygen", "--out", "r", "--force", cwd=tmp_path, unprivileged=True)
    assert (digest(tmp_path / "r.key"), digest(tmp_path / "r.pub")) == (key, pub)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.key", "r.pub"]
    assert refused.returncode == 2
    assert "'r.pub'" in refused.stderr and "read-only" in refused.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_files_written_before_the_output_failed_are_said_to_be_written(
    tmp_path: Path, legacy: Path
) -> None:
    """`amber keygen > /dev/full` wrote both key files, then said only "error: no space left
    on device", as if it had failed; convert said the same of the pickle it had converted."""

    def to_full(*args: str) -> subprocess.CompletedProcess[str]:
        with open("/dev/full", "w") as full:
            return subprocess.run(
                [*AMBER, *args], stdout=full, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                timeout=120,
            )  # fmt: skip

    made = to_full("keygen", "--out", "k")
    assert made.returncode == 2, made.stderr
    kid = key_id(load_public_key(tmp_path / "k.pub"))
    assert key_id(load_private_key(tmp_path / "k.key")) == kid
    assert made.stderr == (
        f"amber keygen: error: wrote 'k.key' and 'k.pub' (key id {kid}), but writing to "
        f"standard output failed: no space left on device; the disk or device it goes to is "
        f"full; free some space or send the output elsewhere\n"
    )
    converted = to_full("convert", legacy.name, "m.amber")
    assert converted.returncode == 2, converted.stderr
    assert converted.stderr.startswith(
        "amber convert: error: converted 'model.pkl' to 'm.amber' (verified), but writing to "
        "standard output failed: no space left on device"
    )
    assert amber.inspect(tmp_path / "m.amber").object_type.endswith("RandomForestClassifier")
    signed = to_full("sign", "m.amber", "--key", "k.key")
    assert signed.returncode == 2, signed.stderr
    assert signed.stderr.startswith(
        f"amber sign: error: signed 'm.amber' with key {kid}, but writing to standard output"
    )
    assert amber.inspect(tmp_path / "m.amber").signer["key_id"] == kid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key", "k.pub", "m.amber", "model.pkl"]


def test_keygen_says_when_no_key_file_was_written(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir()
    os.chmod(folder, 0o555)
    refused = run("keygen", "--out", str(folder / "k"), unprivileged=True)
    assert refused.returncode == 2
    assert f"the folder '{folder}' is not writable" in refused.stderr
    assert "(no key file was written)" in refused.stderr and list(folder.iterdir()) == []


def test_a_bad_key_file_is_not_blamed_on_the_model(tmp_path: Path) -> None:
    """A key that could not be read was reported as "error: 'm.amber': bad.pem is not ...":
    led by the model's name, as if the model were at fault."""
    amber.save(SVC().fit(X, Y), tmp_path / "m.amber")
    (tmp_path / "bad.pem").write_text("not a key\n")
    cases = {
        ("sign", "m.amber", "--key", "bad.pem"): "error: bad.pem is not",
        ("sign", "m.amber", "--key", "gone.key"): "error: no such private key file: 'gone.key'",
        ("verify", "m.amber", "--pubkey", "bad.pem"): "error: bad.pem is not",
        ("verify", "m.amber", "--pubkey", "gone.pub"): "error: no such public key file",
    }
    for args, said in cases.items():
        refused = run(*args, cwd=tmp_path)
        assert refused.returncode == 2, args
        assert said in refused.stderr and "m.amber" not in refused.stderr, refused.stderr
    # a message about the model itself is still led by the model's name
    (tmp_path / "m.amber").write_bytes(b"PK\x03\x04 truncated")
    damaged = run("verify", "m.amber", cwd=tmp_path)
    assert damaged.returncode in (1, 2) and "'m.amber'" in damaged.stderr, damaged.stderr


def test_a_suggested_target_is_a_name_no_file_has(tmp_path: Path, legacy: Path) -> None:
    """convert, verify and sign suggested model.amber for model.pkl although model.amber
    existed: following the suggestion overwrote it. An explicit target is replaced (as any
    save replaces its target); a suggested one is a free name."""
    existing = {"model.amber": b"mine", "model-converted.amber": b"also mine"}
    for name, data in existing.items():
        (tmp_path / name).write_bytes(data)
    free = f"'{tmp_path / 'model-converted-2.amber'}'"
    assert free in run("convert", str(legacy), "").stderr
    assert free in run("convert", str(legacy), str(legacy)).stderr
    verified = run("verify", str(legacy))
    assert f"amber convert {legacy} {tmp_path / 'model-converted-2.amber'}`" in verified.stderr
    assert run("keygen", "--out", "k", cwd=tmp_path).returncode == 0
    signed = run("sign", str(legacy), "--key", "k.key", cwd=tmp_path)
    assert f"(`amber sign {tmp_path / 'model-converted-2.amber'} --key KEY`)" in signed.stderr
    assert all((tmp_path / name).read_bytes() == data for name, data in existing.items())
    (tmp_path / "model.amber").unlink()
    assert f"e.g. '{tmp_path / 'model.amber'}'" in run("convert", str(legacy), "").stderr


# -- 12, 13: what a signature binds, what an exported file carries --------------------------------
def test_a_version_bound_without_a_name_is_shown(tmp_path: Path) -> None:
    """`sign --version 3` without --name printed '(no registry name)', hiding the version."""
    assert run("keygen", "--out", "k", cwd=tmp_path).returncode == 0
    path = tmp_path / "m.amber"
    amber.save(SVC().fit(X, Y), path)
    signed = run("sign", str(path), "--key", "k.key", "--version", "3", cwd=tmp_path)
    assert signed.returncode == 0, signed.stderr
    assert "(version 3, no name)" in signed.stdout
    checked = run("verify", str(path), "--pubkey", "k.pub", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "signed by trusted key" in checked.stdout and "(version 3, no name)" in checked.stdout
    shown = run("inspect", str(path))
    assert "for version 3, no name" in shown.stdout


def test_inspect_shows_registry_metadata_and_the_signer(tmp_path: Path) -> None:
    """inspect's text showed none of an exported file's name, version, metrics, tags and
    description, nor its signer; --json had only "signed": true."""
    assert run("keygen", "--out", "k", cwd=tmp_path).returncode == 0
    reg = amber.Registry(tmp_path / "reg")
    reg.push(
        "iris", SVC().fit(X, Y), sample=X[:8], metrics={"accuracy": 0.97},
        tags={"team": "risk"}, description="SVC on iris",
    )  # fmt: skip
    out = tmp_path / "out.amber"
    reg.export("models:/iris/1", out, signing_key=tmp_path / "k.key")
    kid = key_id(load_public_key(tmp_path / "k.pub"))
    shown = run("inspect", str(out))
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "registry    iris version 1, published " in text
    assert "metrics      accuracy=0.97" in text and "tags         team=risk" in text
    assert "description  SVC on iris" in text
    assert f"signed      yes, by key {kid} for iris version 1 (unchecked" in text
    as_json = json.loads(run("inspect", "--json", str(out)).stdout)
    assert as_json["signed"] is True
    assert as_json["signer"] == {"key_id": kid, "name": "iris", "version": 1, "checked": False}
    assert as_json["registry"]["description"] == "SVC on iris"


# -- 14: messages --------------------------------------------------------------------------------
def test_a_zip_from_another_library_or_a_truncated_artifact_is_named(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    checkpoint = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), checkpoint)
    for command in ("scan", "inspect", "verify"):
        said = run(command, str(checkpoint))
        assert said.returncode == 1
        assert f"'{checkpoint}' is a ZIP file but not an Amber artifact" in said.stderr
        assert "PyTorch checkpoint" in said.stderr and "torch.load" in said.stderr
        assert "restore it" not in said.stderr
    artifact = tmp_path / "m.amber"
    amber.save(SVC().fit(X, Y), artifact)
    truncated = tmp_path / "trunc.amber"
    truncated.write_bytes(artifact.read_bytes()[:-100])
    for command in ("scan", "inspect", "verify"):
        said = run(command, str(truncated))
        assert said.returncode == 1 and "trunc.amber" in said.stderr, (command, said.stderr)


def test_sample_errors_say_they_concern_the_sample(tmp_path: Path, legacy: Path) -> None:
    (tmp_path / "garbage.npy").write_bytes(b"garbage")
    np.save(tmp_path / "obj.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    (tmp_path / "bad.csv").write_text('a,b\n1,"x\n')
    (tmp_path / "empty.csv").write_text("")
    expected = {
        "garbage.npy": "is not a NumPy .npy file",
        "obj.npy": "holds an array of Python objects",
        "missing.npy": "no such file",
        "bad.csv": "could not be read as a CSV table",
        "empty.csv": "is empty",
        "sample.txt": "give a .npy file",
    }
    for name, says in expected.items():
        said = run(
            "convert", str(legacy), str(tmp_path / "o.amber"), "--sample", str(tmp_path / name)
        )
        assert said.returncode == 2, (name, said.stderr)
        assert f"--sample '{tmp_path / name}'" in said.stderr and says in said.stderr, said.stderr
        assert "allow_pickle" not in said.stderr
        assert not (tmp_path / "o.amber").exists()


def test_messages_name_options_as_the_command_line_spells_them(
    tmp_path: Path, legacy: Path
) -> None:
    """The library's errors name its Python arguments (``sample=``, ``trusted=[...]``); the
    command says its options instead, which a shell user can pass."""
    np.save(tmp_path / "narrow.npy", X[:5, :3])
    np.save(tmp_path / "row.npy", X[0])
    target = tmp_path / "o.amber"
    narrow = run("convert", str(legacy), str(target), "--sample", str(tmp_path / "narrow.npy"))
    assert narrow.returncode == 2
    assert "--sample was given but the model answers none of" in narrow.stderr, narrow.stderr
    row = run("convert", str(legacy), str(target), "--sample", str(tmp_path / "row.npy"))
    assert row.returncode == 2
    assert "--sample is a 1-d array of shape (4,)" in row.stderr, row.stderr
    assert "numpy.save(path, x.reshape(1, -1))" in row.stderr
    (tmp_path / "custom_mod.py").write_text("class Thing:\n    pass\n")
    source = tmp_path / "custom.pkl"
    subprocess.run(
        [sys.executable, "-c", "import pickle, custom_mod, sys; "
         "pickle.dump({'w': custom_mod.Thing()}, open(sys.argv[1], 'wb'))", str(source)],
        cwd=tmp_path, check=True, timeout=60,
    )  # fmt: skip
    untrusted = run("convert", str(source), str(target), cwd=tmp_path)
    assert untrusted.returncode == 1
    assert "pass --trust custom_mod.Thing; check first with amber scan" in untrusted.stderr
    for said in (narrow, row, untrusted):
        assert "sample=" not in said.stderr and "trusted=" not in said.stderr, said.stderr
    assert not target.exists()


def test_messages_name_the_file_and_say_what_to_do(tmp_path: Path, legacy: Path) -> None:
    empty_target = run("convert", str(legacy), "")
    assert empty_target.returncode == 2
    assert "the target path is empty" in empty_target.stderr and "folder" not in empty_target.stderr
    assert run("keygen", "--out", "k", cwd=tmp_path).returncode == 0
    signed = run("sign", str(legacy), "--key", "k.key", cwd=tmp_path)
    assert signed.returncode == 1
    assert "convert it first" in signed.stderr and "amber convert" in signed.stderr
    no_folder = run("keygen", "--out", "nodir/k", cwd=tmp_path)
    assert no_folder.returncode == 2
    assert "the folder 'nodir' does not exist" in no_folder.stderr
    assert "[Errno" not in no_folder.stderr and not (tmp_path / "nodir").exists()
    for prefix in ("", "keys/", ".", "..", "keys/.."):
        nameless = run("keygen", "--out", prefix, cwd=tmp_path)
        assert nameless.returncode == 2 and "names no file" in nameless.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # ..key, ...pub
    in_a_file = run("keygen", "--out", "k.key/x", cwd=tmp_path)
    assert in_a_file.returncode == 2 and "'k.key' is not a folder" in in_a_file.stderr
    assert "mkdir" not in in_a_file.stderr
    # another signer's key: say how to trust it on the command line
    artifact = tmp_path / "m.amber"
    amber.save(SVC().fit(X, Y), artifact)
    assert run("sign", str(artifact), "--key", "k.key", cwd=tmp_path).returncode == 0
    assert run("keygen", "--out", "other", cwd=tmp_path).returncode == 0
    other = run("verify", str(artifact), "--pubkey", "other.pub", cwd=tmp_path)
    assert other.returncode == 1 and "--pubkey" in other.stderr


def test_unreadable_files_are_named_with_what_to_do(tmp_path: Path, legacy: Path) -> None:
    artifact = tmp_path / "locked.amber"
    amber.save(SVC().fit(X, Y), artifact)
    os.chmod(artifact, 0)
    os.chmod(legacy, 0)
    for args in (
        ("inspect", str(artifact)),
        ("verify", str(artifact)),
        ("scan", str(legacy)),
        ("convert", str(legacy), str(tmp_path / "out.amber")),
    ):
        said = run(*args, unprivileged=True)
        assert said.returncode == 2, (args, said.stderr)
        assert "permission denied" in said.stderr and "check its permissions" in said.stderr
        assert "[Errno" not in said.stderr and args[1] in said.stderr


def test_verify_exit_status_is_as_documented(tmp_path: Path) -> None:
    """1 when a check fails, 2 when the file cannot be read (README says so)."""
    assert "exit status 1 if a check fails, 2 if the file cannot be read" in README.read_text()
    path = tmp_path / "m.amber"
    amber.save(SVC().fit(X, Y), path)
    data = bytearray(path.read_bytes())
    data[200] ^= 0x40
    path.write_bytes(data)
    assert run("verify", str(path)).returncode == 1
    assert run("verify", str(tmp_path / "absent.amber")).returncode == 2


# -- usability audit: samples, suggestions, names -----------------------------------------------
def test_a_csv_sample_without_a_header_row_is_refused(tmp_path: Path, legacy: Path) -> None:
    """A CSV file without a header: pandas took its first row of data for the column names
    and dropped it from the probe, silently."""
    sample = tmp_path / "noheader.csv"
    np.savetxt(sample, X[:10], delimiter=",", fmt="%.1f")
    target = tmp_path / "o.amber"
    said = run("convert", str(legacy), str(target), "--sample", str(sample))
    assert said.returncode == 2, said.stderr
    assert f"--sample '{sample}' has no header row" in said.stderr
    assert (
        "(5.1,3.5,1.4,0.2)" in said.stderr
        and "add a first line with the column names" in said.stderr
    )
    assert "Traceback" not in said.stderr and not target.exists()
    # a header row of names (even one naming a column by a number among others) is a header
    (tmp_path / "headed.csv").write_text(
        "a,2,c,d\n" + "\n".join(",".join(map(str, r)) for r in X[:10])
    )
    headed = run("convert", str(legacy), str(target), "--sample", str(tmp_path / "headed.csv"))
    assert headed.returncode == 0, headed.stderr
    # and so is pandas' own 0,1,...,n-1 (DataFrame(X).to_csv(index=False))
    import pandas as pd

    pd.DataFrame(X[:10]).to_csv(tmp_path / "numbered.csv", index=False)
    numbered = run("convert", str(legacy), str(target), "--sample", str(tmp_path / "numbered.csv"))
    assert numbered.returncode == 0, numbered.stderr


def test_convert_needs_no_pandas_without_a_csv_sample(tmp_path: Path, legacy: Path) -> None:
    """pandas is an optional extra: a convert without --sample (or with an .npy one) runs
    without it."""
    target = tmp_path / "o.amber"
    np.save(tmp_path / "s.npy", X[:5])
    script = (
        "import sys, runpy; sys.modules['pandas'] = None; "
        "sys.argv = ['amber', *sys.argv[1:]]; runpy.run_module('amber', run_name='__main__')"
    )
    for extra in ([], ["--sample", str(tmp_path / "s.npy")]):
        said = subprocess.run(
            [sys.executable, "-c", script, "convert", str(legacy), str(target), *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert said.returncode == 0 and target.exists(), said.stderr[-600:]
        target.unlink()


def test_a_csv_sample_is_given_as_the_model_was_fitted(tmp_path: Path) -> None:
    """A model fitted on an array was probed with the CSV's DataFrame: scikit-learn warned "X
    has feature names, but StandardScaler was fitted without feature names" on every call, and
    the signature recorded columns the model never knew."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    sample = tmp_path / "sample.csv"
    pd.DataFrame(X[:10], columns=["sl", "sw", "pl", "pw"]).to_csv(sample, index=False)
    on_array = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, Y)
    frame = pd.DataFrame(X, columns=["sl", "sw", "pl", "pw"])
    on_frame = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(frame, Y)
    kinds = {}
    for name, model in (("array", on_array), ("frame", on_frame)):
        source, target = tmp_path / f"{name}.pkl", tmp_path / f"{name}.amber"
        source.write_bytes(pickle.dumps(model))
        done = run("convert", str(source), str(target), "--sample", str(sample))
        assert done.returncode == 0, done.stderr
        assert "feature names" not in done.stderr and "Warning" not in done.stderr, done.stderr
        signature = amber.inspect(target).signature
        assert signature is not None
        kinds[name] = signature["inputs"]["kind"]
    assert kinds == {"array": "ndarray", "frame": "dataframe"}


def test_verify_suggests_convert_only_for_a_pickle_or_joblib_file(
    tmp_path: Path, legacy: Path
) -> None:
    """verify of a text file said to run `amber convert text.amber text-converted.amber`,
    which cannot read it either."""
    text = tmp_path / "text.amber"
    text.write_text("hello world\n")
    said = run("verify", str(text))
    assert said.returncode == 1
    assert f"'{text}' is not a pickle, joblib or Amber file" in said.stderr
    assert "nothing here to verify or convert" in said.stderr
    assert "amber convert " not in said.stderr and "converted" not in said.stderr
    pickled = run("verify", str(legacy))
    assert pickled.returncode == 1 and f"`amber convert {legacy} " in pickled.stderr


def test_a_truncated_artifact_is_named_alike_by_every_command(tmp_path: Path) -> None:
    """verify of a registry version whose blob was truncated named no file at all (inspect
    named the blob), and no command named a file called like a word of the message
    ("re-save the model")."""
    artifact = tmp_path / "m.amber"
    amber.save(SVC().fit(X, Y), artifact)
    assert run("push", str(artifact), "--name", "iris", cwd=tmp_path).returncode == 0
    (blob,) = (tmp_path / "amber-models" / "blobs").rglob("*.amber")
    blob.write_bytes(blob.read_bytes()[:-100])
    said = {c: run(c, "models:/iris/1", cwd=tmp_path) for c in ("inspect", "verify")}
    for command, done in said.items():
        assert done.returncode == 1, (command, done.stderr)
        assert f"'models:/iris/1': '{blob}': no zip end-of-central-directory" in done.stderr
    assert said["inspect"].stderr.split(": ", 1)[1] == said["verify"].stderr.split(": ", 1)[1]
    (tmp_path / "model").write_bytes(artifact.read_bytes()[:-100])
    for command in ("scan", "inspect", "verify"):
        done = run(command, "model", cwd=tmp_path)
        assert done.returncode == 1 and "FormatError: 'model': no zip" in done.stderr, done.stderr
