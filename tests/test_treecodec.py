"""The nodes-lz4 codec: decision trees' node arrays stored as the fields they cannot derive."""

from __future__ import annotations

import struct
from pathlib import Path

import lz4.block
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
)
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

import amber
from amber.artifact import _codec, _nodes, _treecodec
from amber.artifact._reader import ArtifactReader
from amber.artifact._writer import artifact_writer
from amber.errors import FormatError, IntegrityError

Xc, yc = make_classification(400, 8, n_informative=5, random_state=0)
Xr, yr = make_regression(300, 6, n_targets=2, noise=5.0, random_state=0)
WEIGHTS = np.random.default_rng(0).random(len(Xr)) + 0.1  # fractional: sums differ in last bits
# trees big enough for their node arrays to go out of band (32 kB: 512 nodes)
Xb, yb = make_classification(3000, 10, n_informative=6, flip_y=0.2, random_state=0)


def _nodes_of(tree: object) -> memoryview:
    return memoryview(tree.tree_.__getstate__()["nodes"]).cast("B")  # type: ignore[attr-defined]


def _round_trip(data: memoryview) -> bytes | None:
    packed = _treecodec.encode(data)
    if packed is not None:
        out = bytearray(data.nbytes)
        _treecodec.decode(memoryview(packed), memoryview(out))
        assert out == data  # byte for byte, padding included
    return packed


TREES = {
    "classifier": lambda: DecisionTreeClassifier(random_state=0).fit(Xc, yc),
    "weighted multi-output regressor": lambda: DecisionTreeRegressor(
        max_depth=7, random_state=0
    ).fit(Xr, yr, sample_weight=WEIGHTS),
    "one leaf": lambda: DecisionTreeClassifier().fit(Xc, np.zeros(len(Xc))),
    "one split": lambda: DecisionTreeRegressor(max_depth=1).fit(Xr, yr[:, 0]),
    "missing values": lambda: DecisionTreeClassifier(random_state=0).fit(
        np.where(np.arange(Xc.size).reshape(Xc.shape) % 7 == 0, np.nan, Xc), yc
    ),
}


@pytest.mark.parametrize("kind", TREES)
def test_depth_first_trees_round_trip_exactly(kind: str) -> None:
    data = _nodes_of(TREES[kind]())
    packed = _round_trip(data)
    assert packed is not None
    assert len(packed) < data.nbytes


def test_weights_that_are_not_their_leaves_sums_are_stored() -> None:
    data = _nodes_of(TREES["weighted multi-output regressor"]())
    packed = _treecodec.encode(data)
    assert packed is not None and packed[6] == 0  # flags: weights of every node stored
    packed = _treecodec.encode(_nodes_of(TREES["classifier"]()))
    assert packed is not None and packed[6] == 1  # derived: the leaves' sums


def test_what_is_not_a_depth_first_tree_is_left_to_the_other_codecs() -> None:
    best_first = DecisionTreeClassifier(max_leaf_nodes=20, random_state=0).fit(Xc, yc)
    assert _round_trip(_nodes_of(best_first)) is None  # children listed out of preorder
    rng = np.random.default_rng(0)
    for data in (
        rng.random(64 * 100).tobytes(),
        bytes(64 * 100),
        np.arange(800, dtype=np.int64).tobytes(),
        _nodes_of(TREES["classifier"]())[:-1].tobytes(),  # not whole nodes
    ):
        assert _treecodec.encode(memoryview(data)) is None
    # an array whose first field says "leaf, then more nodes"
    one_leaf = bytearray(_nodes_of(TREES["one leaf"]()))
    assert _treecodec.encode(memoryview(one_leaf * 2)) is None
    with pytest.raises(ValueError, match="not a tree's nodes"):
        _codec.compress(_treecodec.CODEC, memoryview(bytes(64)))


def test_auto_stores_a_forest_smaller_and_loads_it_identically(tmp_path: Path) -> None:
    forest = RandomForestClassifier(8, random_state=0).fit(Xb, yb)
    path = tmp_path / "forest.amber"
    info = amber.save(forest, path, compress="auto")
    codecs = [e["compression"] for e in info.manifest["entries"].values()]
    assert codecs.count(_treecodec.CODEC) == 8, codecs
    plain = tmp_path / "plain.amber"
    amber.save(forest, plain)
    assert path.stat().st_size < plain.stat().st_size * 0.3
    loaded = amber.load(path)
    for a, b in zip(loaded.estimators_, forest.estimators_, strict=True):
        assert a.tree_.__getstate__()["nodes"].tobytes() == _nodes_of(b).tobytes()
    np.testing.assert_array_equal(loaded.predict_proba(Xb), forest.predict_proba(Xb))
    amber.verify(path)


@pytest.mark.parametrize(
    "model",
    [
        ExtraTreesRegressor(4, random_state=0),
        GradientBoostingRegressor(n_estimators=4, max_depth=12, random_state=0),
        IsolationForest(n_estimators=4, max_samples=2000, random_state=0),
    ],
    ids=lambda m: type(m).__name__,
)
def test_other_tree_ensembles_round_trip_with_auto(tmp_path: Path, model: object) -> None:
    X, y = Xb, yb.astype(float)
    model.fit(X, y)  # type: ignore[attr-defined]
    path = tmp_path / "m.amber"
    info = amber.save(model, path, compress="auto", sample=X[:20])
    assert _treecodec.CODEC in {e["compression"] for e in info.manifest["entries"].values()}
    amber.verify(path)
    loaded = amber.load(path, probe="always")
    method = "decision_function" if isinstance(model, IsolationForest) else "predict"
    np.testing.assert_array_equal(getattr(loaded, method)(X), getattr(model, method)(X))


# -- hostile bytes -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def packed() -> tuple[bytes, int]:
    data = _nodes_of(DecisionTreeClassifier(max_depth=5, random_state=0).fit(Xc, yc))
    got = _treecodec.encode(data)
    assert got is not None
    return got, data.nbytes


def _header(packed: bytes, **fields: int) -> bytes:
    names = ("magic", "fw", "sw", "flags", "zero", "planes", "n")
    values = dict(zip(names, struct.unpack_from("<4sBBBBQQ", packed), strict=True))
    values.update(fields)
    return struct.pack("<4sBBBBQQ", *values.values()) + packed[24:]


def _decode(stored: bytes, size: int) -> None:
    _codec.decompress(_treecodec.CODEC, memoryview(stored), size, "model/buffers/000001.bin")


def test_a_forged_header_is_an_integrity_error(packed: tuple[bytes, int]) -> None:
    stored, size = packed
    planes = struct.unpack_from("<Q", stored, 8)[0]
    cases = [
        (stored[:20], size, "too few for the codec's header"),
        (b"ATN2" + stored[4:], size, "not one this version writes"),
        (_header(stored, flags=3), size, "not one this version writes"),
        (_header(stored, zero=1), size, "not one this version writes"),
        (_header(stored, fw=3), size, "field widths 3 and"),
        (_header(stored, sw=0), size, "field widths"),
        (stored, size + 64, "the manifest records"),
        (_header(stored, n=1 << 58), size, "the manifest records"),
        (_header(stored, planes=1 << 40), size, "cannot decode to"),
        (_header(stored, planes=planes - 1), size, "the LZ4 block decodes to more than"),
        (stored[:-3], size, "the LZ4 block is truncated"),
    ]
    for forged, claimed, message in cases:
        with pytest.raises(IntegrityError, match=message):
            _decode(forged, claimed)
    _decode(stored, size)  # the untouched one decodes


def _planes(packed: bytes) -> tuple[bytes, bytearray]:
    size = struct.unpack_from("<Q", packed, 8)[0]
    return packed[:24], bytearray(lz4.block.decompress(packed[24:], uncompressed_size=size))


def _repack(header: bytes, planes: bytes) -> bytes:
    block = lz4.block.compress(planes, store_size=False)
    return header[:8] + struct.pack("<Q", len(planes)) + header[16:] + block


def test_leaf_bits_that_are_not_one_whole_tree_are_refused(packed: tuple[bytes, int]) -> None:
    stored, size = packed
    header, planes = _planes(stored)
    n = size // 64
    bits = np.unpackbits(np.frombuffer(planes[: (n + 7) // 8], np.uint8))[:n].astype(bool)
    first_leaf = int(np.argmax(bits))
    cases: dict[str, tuple[bytes, str]] = {}
    # a flipped bit changes the count of leaves: the planes' sizes no longer add up (unless a
    # split's feature and a leaf's count take as many bytes), or the walk leaves the tree
    walk = "bytes of planes where|the tree ends at node|have no right child"
    for at in (0, first_leaf, n - 1):
        flipped = bytearray(planes)
        flipped[at // 8] ^= 0x80 >> (at % 8)
        cases[f"bit {at}"] = (_repack(header, bytes(flipped)), walk)
    if n % 8:
        past = bytearray(planes)
        past[n // 8] |= 1  # a bit past the last node
        cases["past the end"] = (_repack(header, bytes(past)), "past the last node")
    for forged, message in cases.values():
        with pytest.raises(IntegrityError, match=message):
            _decode(forged, size)
    _decode(_repack(header, bytes(planes)), size)  # repacked untouched: decodes


def test_the_decoder_refuses_walks_that_leave_the_tree() -> None:
    """Planes whose sizes match but whose leaf bits end the tree early, or leave splits open."""

    def planes(leaf_bits: list[int]) -> bytes:
        n, leaves = len(leaf_bits), sum(leaf_bits)
        splits = n - leaves
        return (
            np.packbits(np.array(leaf_bits, dtype=bool)).tobytes()
            + bytes(splits)  # features (1 byte)
            + bytes(8 * splits)  # thresholds
            + bytes(8 * n)  # impurities
            + bytes(leaves)  # leaves' counts (1 byte)
            + bytes(8 * leaves)  # leaves' weights
            + bytes(n)
            + bytes(7 * n)
        )

    for bits, message in [
        ([1, 1, 1], "the tree ends at node 0 of 3"),
        ([0, 1, 1, 1, 1], "the tree ends at node 2 of 5"),
        ([0, 0, 1], "2 split nodes of 3 have no right child"),
        ([0, 0, 0], "3 split nodes of 3 have no right child"),
        ([0], "1 split nodes of 1 have no right child"),
    ]:
        out = bytearray(64 * len(bits))
        with pytest.raises(ValueError, match=message):
            _nodes.decode(planes(bits), out, len(bits), 1, 1, True)
    out = bytearray(64 * 5)
    _nodes.decode(planes([0, 0, 1, 1, 1]), out, 5, 1, 1, True)
    nodes = np.frombuffer(out, dtype=_treecodec._FIELDS)
    assert nodes["left"].tolist() == [1, 2, -1, -1, -1]
    assert nodes["right"].tolist() == [4, 3, -1, -1, -1]
    with pytest.raises(ValueError, match="do not fill"):
        _nodes.decode(planes([1]), bytearray(65), 1, 1, 1, True)
    # one leaf: its bit, impurity, a count of 2**64 - 1 (8 bytes), weight, direction, padding
    huge = b"\x80" + bytes(8) + b"\xff" * 8 + bytes(8) + bytes(1) + bytes(7)
    with pytest.raises(ValueError, match=r"a leaf counts 2\*\*63 samples or more"):
        _nodes.decode(huge, bytearray(64), 1, 1, 8, True)


def test_mutated_codec_bytes_decode_to_a_tree_or_are_refused(packed: tuple[bytes, int]) -> None:
    stored, size = packed
    header, planes = _planes(stored)
    rng = np.random.default_rng(7)
    outcomes = {"refused": 0, "decoded": 0}
    for _ in range(1500):
        data = bytearray(_repack(header, bytes(planes)) if rng.random() < 0.5 else stored)
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, len(data)))
            data[at] ^= 1 << int(rng.integers(0, 8))
        try:
            out = _codec.decompress(_treecodec.CODEC, memoryview(bytes(data)), size, "x")
        except IntegrityError:
            outcomes["refused"] += 1
            continue
        outcomes["decoded"] += 1
        nodes = np.frombuffer(out, dtype=_treecodec._FIELDS)
        split = nodes["left"] != -1
        # whatever decodes is one whole tree: children inside it, after their parent
        index = np.flatnonzero(split)
        assert (nodes["left"][split] == index + 1).all()
        assert ((nodes["right"][split] > index) & (nodes["right"][split] < len(nodes))).all()
    assert outcomes["refused"] > 100 and outcomes["decoded"] > 100, outcomes


def test_a_decoded_tree_still_passes_the_load_time_checks(tmp_path: Path) -> None:
    """The codec rebuilds a well-formed tree from any planes, not a safe one: a split on a
    feature the model lacks, stored with nodes-lz4 and valid digests, is refused at load."""
    forest = RandomForestClassifier(3, random_state=0).fit(Xb, yb)
    base = tmp_path / "base.amber"
    amber.save(forest, base, compress="auto")
    with ArtifactReader(base) as reader:
        manifest = {k: v for k, v in reader.manifest.items() if k != "entries"}
        entries = {n: bytes(reader.read(n)) for n in reader.entries}
        coded = [n for n, r in reader.entries.items() if r["compression"] == _treecodec.CODEC]
    nodes = np.frombuffer(bytearray(entries[coded[0]]), dtype=_treecodec._FIELDS)
    nodes["feature"][0] = 1_000_000  # the root splits on feature 1,000,000 of 10
    entries[coded[0]] = nodes.tobytes()
    forged = tmp_path / "forged.amber"
    with artifact_writer(forged, compress="auto") as writer:
        for name, data in entries.items():
            writer.add(name, data)
        writer.finish(manifest)
    with ArtifactReader(forged) as reader:
        assert reader.entries[coded[0]]["compression"] == _treecodec.CODEC
    with pytest.raises(FormatError, match=r"a split uses a feature outside 0\.\.9"):
        amber.load(forged)
