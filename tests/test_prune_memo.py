"""The save-side pass that drops a pickle stream's unread memo stores (amber.handlers._prune_memo).

It must build the same objects (shared references still shared, cycles still cycles), renumber
GETs across the one-byte boundary, shrink or drop frames, and decline (None) anything that is not
a protocol 4-5 stream it fully understands, without ever crashing on bytes it is given.
"""

from __future__ import annotations

import pickle
import pickletools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amber.handlers._prune_memo import prune
from amber.security._scanner import scan_pickle


def _ops(stream: bytes) -> list[str]:
    return [op.name for op, _, _ in pickletools.genops(stream)]


def _round_trip(obj: Any, protocol: int = 5) -> tuple[bytes, bytes]:
    stream = pickle.dumps(obj, protocol=protocol)
    pruned = prune(stream)
    assert pruned is not None and len(pruned) < len(stream)
    scan_pickle(pruned)  # what the loader will check: a valid stream, no trailing bytes
    return stream, pruned


def test_unread_stores_go_and_shared_references_stay_shared() -> None:
    shared = ["x" * 10]
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    obj = {"a": shared, "b": shared, "keys": {f"k{i}": i for i in range(1000)}, "cycle": cyclic}
    stream, pruned = _round_trip(obj)
    assert _ops(stream).count("MEMOIZE") > 1000
    # kept: the shared list and the cyclic one, the only objects read back
    assert _ops(pruned).count("MEMOIZE") == 2
    back = pickle.loads(pruned)
    assert back["a"] is back["b"] and back["a"] == shared
    assert back["cycle"][1] is back["cycle"]
    assert back["keys"] == obj["keys"]


def test_gets_are_renumbered_across_the_one_byte_boundary() -> None:
    """References to the 5th and the 900th of 1,000 memoized strings: LONG_BINGET 900 becomes a
    BINGET once the unread stores before it are gone."""
    words = [f"w{i}" for i in range(1000)]
    obj = [words, words[5], words[900], words[900], [words[5]] * 3]
    stream, pruned = _round_trip(obj)
    assert "LONG_BINGET" in _ops(stream) and "LONG_BINGET" not in _ops(pruned)
    back = pickle.loads(pruned)
    assert back == obj
    assert back[1] is back[0][5] and back[2] is back[0][900] and back[4][0] is back[0][5]


def test_many_read_stores_keep_long_gets() -> None:
    """Over 256 stores that are read: indices past 255 stay LONG_BINGETs, renumbered."""
    items = [(i,) for i in range(600)]  # tuples memoized after their contents
    obj = {"unread": [str(i) for i in range(500)], "items": items, "again": items[::-1]}
    _, pruned = _round_trip(obj)
    assert "LONG_BINGET" in _ops(pruned)
    back = pickle.loads(pruned)
    assert back == obj and all(
        a is b for a, b in zip(back["items"], back["again"][::-1], strict=True)
    )


def test_frames_shrink_and_large_data_stays_outside_them() -> None:
    big = np.arange(100_000, dtype=np.float64)  # 800 kB in band: written outside any frame
    obj = {"names": [f"n{i}" for i in range(20_000)], "big": big, "tail": ["t"] * 3}
    stream, pruned = _round_trip(obj)
    assert _ops(stream).count("FRAME") > 2
    back = pickle.loads(pruned)
    assert back["names"] == obj["names"] and back["tail"] == ["t"] * 3
    np.testing.assert_array_equal(back["big"], big)


def test_out_of_band_buffers_are_kept_in_order() -> None:
    arrays = [np.full(10, i, dtype=np.int64) for i in range(3)]
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(
        {"arrays": arrays, "labels": [f"l{i}" for i in range(50)]},
        protocol=5,
        buffer_callback=buffers.append,
    )
    pruned = prune(stream)
    assert pruned is not None
    back = pickle.loads(pruned, buffers=buffers)
    assert [a.tolist() for a in back["arrays"]] == [a.tolist() for a in arrays]


@pytest.mark.parametrize(
    "stream",
    [
        pickle.dumps({"a": ["b"] * 2}, protocol=2),  # BINPUT: protocols 0-3 are declined
        pickle.dumps({"a": 1}, protocol=0),  # text opcodes
        pickle.dumps(["abc", "abc"], protocol=5) + b"junk",  # bytes after STOP
        pickle.dumps(["abc", "def"], protocol=5)[:-1],  # no STOP
        b"\x80\x05h\x00.",  # a GET of what is not stored yet
        b"\x80\x05\x95\xff\x00\x00\x00\x00\x00\x00\x00N.",  # a frame past the end
        b"\x80\x05\x95\x02\x00\x00\x00\x00\x00\x00\x00\x8c\x01a\x94.",  # an opcode across it
        b"",
    ],
)
def test_streams_it_does_not_take_are_left_alone(stream: bytes) -> None:
    assert prune(stream) is None


def test_a_stream_without_stores_is_declined_and_one_with_only_unread_ones_is_pruned() -> None:
    assert prune(pickle.dumps(None, protocol=5)) is None  # nothing to drop
    pruned = prune(pickle.dumps([1, 2], protocol=5))  # the list's store, never read
    assert pruned is not None and "MEMOIZE" not in _ops(pruned)
    assert pickle.loads(pruned) == [1, 2]


def test_an_emptied_frame_is_dropped_with_its_header() -> None:
    # PROTO 5, FRAME(2) holding only a MEMOIZE of the None before it... a frame of MEMOIZEs
    stream = b"\x80\x05N\x95\x01\x00\x00\x00\x00\x00\x00\x00\x94."
    pruned = prune(stream)
    assert pruned == b"\x80\x05N."
    assert pickle.loads(pruned) is None


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4), inner, max_size=6)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(_values, st.lists(st.integers(0, 10), max_size=6))
def test_any_value_builds_the_same_after_pruning(value: Any, picks: list[int]) -> None:
    """Random values with random shared references into them."""
    parts = [value, [value] * 2]
    obj = [*parts, *[parts[p % 2] for p in picks]]
    stream = pickle.dumps(obj, protocol=5)
    pruned = prune(stream)
    out = pickle.loads(stream if pruned is None else pruned)
    ref = pickle.loads(stream)
    assert repr(out) == repr(ref)
    # the same objects shared as pickle's own load shares them (ints and the like never are)
    assert [out[1][0] is x for x in (out[1][1], out[0], *out[2:])] == [
        ref[1][0] is x for x in (ref[1][1], ref[0], *ref[2:])
    ]
    assert [out[1] is x for x in out[2:]] == [ref[1] is x for x in ref[2:]]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 300), st.integers(0, 255))
def test_damaged_streams_never_crash_it(tail: bytes, at: int, byte: int) -> None:
    base = bytearray(pickle.dumps({"k": ["v", "v"], "n": list(range(300))}, protocol=5))
    if at < len(base):
        base[at] = byte
    for stream in (bytes(base), bytes(base) + tail, bytes(base[:at]) + tail):
        result = prune(stream)
        assert result is None or (isinstance(result, bytes) and len(result) <= len(stream))
