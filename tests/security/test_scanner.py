"""The opcode scanner: every rule has a hand-made stream that breaks it."""

from __future__ import annotations

import contextlib
import io
import pickle
import pickletools
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from security_kit import (
    BUILD,
    EMPTY_DICT,
    EMPTY_LIST,
    EMPTY_TUPLE,
    MARK,
    NEWOBJ,
    NONE,
    PROTO5,
    REDUCE,
    STACK_GLOBAL,
    TUPLE,
    binget,
    binint,
    binput,
    glob,
    sbu,
    sglob,
)

from amber.errors import FormatError
from amber.security import _pickle_scan  # type: ignore[attr-defined]
from amber.security._scanner import OBJECT, STATE, PickleScan, scan_pickle

SAMPLE = {"a": [1, 2.5, "x", b"y", None, True], "t": (1, 2, 3, 4), "s": {1, 2}, "n": -(2**70)}


# --------------------------------------------------------------------------- valid streams
@pytest.mark.parametrize("protocol", range(6))
def test_every_protocol_of_a_plain_structure_passes(protocol: int) -> None:
    scan = scan_pickle(pickle.dumps(SAMPLE, protocol=protocol))
    assert isinstance(scan, PickleScan)
    assert scan.n_buffers_used == 0
    if protocol >= 2:
        assert scan.protocol == protocol
    # protocols < 4 call builtins.set (mapped from __builtin__ below protocol 3); bytes
    # below protocol 3 are rebuilt with _codecs.encode
    expected = {
        0: {("_codecs", "encode"), ("builtins", "set")},
        1: {("_codecs", "encode"), ("builtins", "set")},
        2: {("_codecs", "encode"), ("builtins", "set")},
        3: {("builtins", "set")},
    }
    assert set(scan.globals) == expected.get(protocol, set())


@pytest.mark.parametrize("protocol", range(6))
def test_numpy_arrays_in_band_report_their_globals(protocol: int) -> None:
    scan = scan_pickle(pickle.dumps(np.arange(6.0).reshape(2, 3), protocol=protocol))
    assert ("numpy", "dtype") in scan.globals
    assert scan.globals[0] in {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.numeric", "_frombuffer"),
    }


def test_out_of_band_buffers_are_counted() -> None:
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps([np.ones(10), np.zeros(3)], protocol=5, buffer_callback=buffers.append)
    scan = scan_pickle(data, n_buffers=len(buffers))
    assert scan.n_buffers_used == 2
    assert scan.globals == (("numpy._core.numeric", "_frombuffer"), ("numpy", "dtype"))
    assert ("numpy._core.numeric", "_frombuffer") in scan.called


def test_protocol_0_text_opcodes_are_understood() -> None:
    # GLOBAL, INT, LONG, FLOAT, STRING, UNICODE, PUT, GET in their text forms
    data = (
        b"(lp0\n"
        b"I42\naL12345678901234567890L\naF1.5\naS'abc'\naVh\\u00e9llo\nap1\n"
        b"g1\na" + glob("builtins", "slice") + b"(I1\nI2\nNtR" + b"a."
    )
    pickletools.dis(data, out=io.StringIO())  # a valid stream, for the record
    scan = scan_pickle(data)
    assert scan.globals == (("builtins", "slice"),)
    assert scan.protocol == 0


def test_python2_names_are_mapped_below_protocol_3() -> None:
    data = b"\x80\x02" + glob("__builtin__", "set") + b"]\x85R."
    assert scan_pickle(data).globals == (("builtins", "set"),)
    data = PROTO5 + glob("__builtin__", "set") + b"]\x85R."
    assert scan_pickle(data).globals == (("__builtin__", "set"),)


def test_globals_are_listed_once_in_order_of_first_use() -> None:
    data = PROTO5 + MARK + sglob("b", "y") + sglob("a", "x") + sglob("b", "y") + b"l."
    assert scan_pickle(data).globals == (("b", "y"), ("a", "x"))
    assert scan_pickle(data).dotted_globals == ("b.y", "a.x")


# --------------------------------------------------------------------------- refusals
def refused(data: bytes, *fragments: str, n_buffers: int = 0) -> FormatError:
    with pytest.raises(FormatError) as info:
        scan_pickle(data, n_buffers=n_buffers)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "at byte" in message and "nothing from it was run" in message
    return info.value


@pytest.mark.parametrize(
    ("name", "stream"),
    [
        ("PERSID", PROTO5 + b"Pid\n."),
        ("BINPERSID", PROTO5 + sbu("x") + b"Q."),
        ("EXT1", PROTO5 + b"\x82\x01."),
        ("EXT2", PROTO5 + b"\x83\x01\x00."),
        ("EXT4", PROTO5 + b"\x84\x01\x00\x00\x00."),
        ("INST", b"(ios\nsystem\n."),
        ("OBJ", PROTO5 + MARK + sglob("os", "system") + b"o."),
    ],
)
def test_forbidden_opcodes(name: str, stream: bytes) -> None:
    refused(stream, f"opcode {name} is not allowed")


@pytest.mark.parametrize("opcode", [0x00, 0x99, 0xFF, ord("Z")])
def test_unknown_opcodes(opcode: int) -> None:
    refused(PROTO5 + bytes([opcode]) + b".", "unknown opcode")


@pytest.mark.parametrize(
    "stream",
    [
        PROTO5 + b"\x8e" + struct.pack("<Q", 2**62) + b"x.",  # BINBYTES8
        PROTO5 + b"\x8d" + struct.pack("<Q", 2**40) + b"x.",  # BINUNICODE8
        PROTO5 + b"\x96" + struct.pack("<Q", 2**63 - 1) + b".",  # BYTEARRAY8
        PROTO5 + b"B" + struct.pack("<I", 2**32 - 1) + b".",  # BINBYTES
        PROTO5 + b"X" + struct.pack("<I", 100) + b"abc.",  # BINUNICODE
        PROTO5 + b"T" + struct.pack("<I", 1000) + b"abc.",  # BINSTRING
        PROTO5 + b"C\x10abc.",  # SHORT_BINBYTES
        PROTO5 + b"\x8b" + struct.pack("<I", 50) + b"\x01.",  # LONG4
        PROTO5 + b"\x8c\x05ab",  # SHORT_BINUNICODE at the very end
        PROTO5 + b"\x8e\x01\x00",  # the length prefix itself is cut
    ],
)
def test_lengths_are_checked_before_reading(stream: bytes) -> None:
    refused(stream, "remain")


@pytest.mark.parametrize("opcode", [b"T", b"\x8b"])
def test_negative_byte_counts(opcode: bytes) -> None:
    refused(PROTO5 + opcode + struct.pack("<i", -5) + b"abc.", "negative byte count")


def test_frame_longer_than_the_data() -> None:
    refused(PROTO5 + b"\x95" + struct.pack("<Q", 1000) + b"N.", "FRAME declares 1000 bytes")


def test_frame_inside_a_frame() -> None:
    inner = b"\x95" + struct.pack("<Q", 2) + b"N."
    refused(PROTO5 + b"\x95" + struct.pack("<Q", len(inner)) + inner, "previous frame ended")


def test_opcode_crossing_the_end_of_its_frame() -> None:
    body = sbu("hello") + b"."
    refused(PROTO5 + b"\x95" + struct.pack("<Q", 3) + body, "crosses the end of its FRAME")


def test_consistent_frames_pass() -> None:
    data = pickle.dumps(list(range(50_000)), protocol=5)
    assert data.count(b"\x95") >= 1
    assert scan_pickle(data).globals == ()


def test_huge_memo_index_is_refused() -> None:
    # the C unpickler would resize its memo to 2 * index entries: 16 GB for 2**30
    refused(PROTO5 + NONE + b"r" + struct.pack("<I", 2**30) + b".", "LONG_BINPUT index")
    refused(b"Np99999999\n.", "PUT index")


def test_memo_get_of_unset_index() -> None:
    refused(PROTO5 + NONE + binput(0) + binget(1) + b"0.", "BINGET of memo index 1")
    refused(b"Ng7\n.", "GET of memo index 7")
    refused(PROTO5 + b"j" + struct.pack("<I", 3) + b".", "LONG_BINGET of memo index 3")


def test_malformed_text_memo_index() -> None:
    refused(b"Np-1\n.", "not a decimal memo index")


def test_memo_round_trip_passes() -> None:
    shared = [1, 2]
    assert scan_pickle(pickle.dumps([shared, shared], protocol=2)).globals == ()


def test_next_buffer_beyond_the_supplied_buffers() -> None:
    data = PROTO5 + b"\x97\x97\x86."
    refused(data, "NEXT_BUFFER #2 but only 1 buffer(s)", n_buffers=1)


def test_fewer_buffers_used_than_supplied() -> None:
    with pytest.raises(
        FormatError, match=r"uses 1 out-of-band buffer, and 3 buffers were supplied"
    ):
        scan_pickle(PROTO5 + b"\x97.", n_buffers=3)


def test_readonly_buffer_must_follow_a_buffer() -> None:
    refused(PROTO5 + sbu("x") + b"\x98.", "READONLY_BUFFER applied to a string")
    assert scan_pickle(PROTO5 + b"\x97\x98.", n_buffers=1).n_buffers_used == 1


def test_build_on_a_global_is_refused() -> None:
    # BUILD with slot state would setattr on the class itself, for the whole process
    state = NONE + EMPTY_DICT + sbu("__reduce_ex__") + NONE + b"s" + b"\x86"
    refused(PROTO5 + sglob("collections", "OrderedDict") + state + BUILD + b".", "BUILD would set")


def test_build_on_a_global_fetched_from_the_memo_is_refused() -> None:
    data = (
        PROTO5
        + sglob("collections", "OrderedDict")
        + MEMOIZE_
        + b"0"
        + binget(0)
        + EMPTY_DICT
        + BUILD
        + b"."
    )
    refused(data, "BUILD would set")


MEMOIZE_ = b"\x94"


def test_build_on_a_plain_value_is_refused() -> None:
    refused(PROTO5 + EMPTY_LIST + EMPTY_DICT + BUILD + b".", "BUILD on a plain value")


@pytest.mark.parametrize("opcode", [REDUCE, NEWOBJ])
def test_calling_something_that_is_not_a_global(opcode: bytes) -> None:
    made = sglob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE  # a constructed object
    refused(PROTO5 + made + EMPTY_TUPLE + opcode + b".", "would call a constructed object")
    refused(PROTO5 + EMPTY_LIST + EMPTY_TUPLE + opcode + b".", "would call a plain value")


def test_newobj_ex_of_a_string() -> None:
    refused(PROTO5 + sbu("x") + EMPTY_TUPLE + EMPTY_DICT + b"\x92.", "NEWOBJ_EX would call")


def test_stack_global_needs_string_literals() -> None:
    refused(PROTO5 + binint(1) + sbu("x") + STACK_GLOBAL + b".", "must be string literals")
    computed = sglob("builtins", "str") + MARK + sbu("os") + TUPLE + REDUCE
    refused(PROTO5 + computed + sbu("system") + STACK_GLOBAL + b".", "constructed object")


def test_stack_global_from_memoized_strings_passes() -> None:
    data = PROTO5 + sbu("builtins") + MEMOIZE_ + sbu("slice") + STACK_GLOBAL + b"0"
    data += b"h\x00" + sbu("set") + STACK_GLOBAL + b"."
    assert scan_pickle(data).globals == (("builtins", "slice"), ("builtins", "set"))


@pytest.mark.parametrize(
    ("op", "target"),
    [(b"a", NONE), (b"s", NONE + NONE), (b"u", MARK + NONE + NONE), (b"e", MARK + NONE)],
)
def test_container_opcodes_never_target_a_global(op: bytes, target: bytes) -> None:
    refused(PROTO5 + sglob("collections", "OrderedDict") + target + op + b".", "modify a global")


BYTEARRAY = b"\x96" + struct.pack("<Q", 8) + bytes(8)  # BYTEARRAY8 of 8 bytes
NEXT_BUFFER = b"\x97"
SET_FIRST_BYTE = binint(0) + binint(1) + b"s"  # key, value, SETITEM


@pytest.mark.parametrize(
    ("stream", "n_buffers"),
    [
        (PROTO5 + BYTEARRAY + SET_FIRST_BYTE + b".", 0),
        (PROTO5 + BYTEARRAY + MEMOIZE_ + b"0" + binget(0) + SET_FIRST_BYTE + b".", 0),
        (PROTO5 + BYTEARRAY + b"2" + SET_FIRST_BYTE + b"0.", 0),  # through a DUP
        (
            PROTO5 + BYTEARRAY + MEMOIZE_ + b"0" + binget(0) + b"(" + binint(0) + binint(1) + b"u.",
            0,
        ),
        (PROTO5 + NEXT_BUFFER + SET_FIRST_BYTE + b".", 1),
        (PROTO5 + NEXT_BUFFER + b"\x98" + SET_FIRST_BYTE + b".", 1),  # read-only: refused too
    ],
    ids=["bytearray", "memo copy", "dup", "setitems", "buffer", "read-only buffer"],
)
def test_the_bytes_under_an_array_are_never_modified(stream: bytes, n_buffers: int) -> None:
    """An array of a protocol-5 stream views a bytearray of the stream or an out-of-band buffer
    (numpy's _frombuffer); validators check it where it lies, so a later item assignment to
    those bytes would change a checked array (a boosting tree's child links) unchecked."""
    refused(stream, "modify an array's bytes in place", n_buffers=n_buffers)


@pytest.mark.parametrize(
    "stream",
    [
        PROTO5 + NEXT_BUFFER + MEMOIZE_ + binget(0) + b"\x86.",  # a memo copy
        PROTO5 + NEXT_BUFFER + b"2\x86.",  # a DUP
        PROTO5 + NEXT_BUFFER + MEMOIZE_ + b"\x98" + binget(0) + b"\x86.",  # and a read-only view
    ],
    ids=["memo copy", "dup", "read-only view and the buffer"],
)
def test_an_out_of_band_buffer_is_used_once(stream: bytes) -> None:
    """Two uses of one buffer could give its bytes to two arrays; the pickler never copies one
    (each array pickles a buffer of its own)."""
    refused(stream, "out-of-band buffer: honest pickles use each buffer once", n_buffers=1)
    scan_pickle(PROTO5 + NEXT_BUFFER + NEXT_BUFFER + b"\x86.", n_buffers=2)  # two buffers


def test_an_array_made_on_a_buffer_is_never_modified() -> None:
    """Nor the array itself, made by numpy's _frombuffer, nor a bytearray made by a call (the
    loader's DATA globals): item assignment writes the bytes, and BUILD would re-fill them."""
    from amber.security._unpickler import hooked_names

    framed = pickle.dumps(np.arange(3.0), protocol=5)
    assert framed[2] == 0x95  # one FRAME, dropped so that opcodes can follow the array
    data = framed[:2] + framed[11:]
    ops = [op.name for op, _, _ in pickletools.genops(data)]
    assert ops[-3:] == ["REDUCE", "MEMOIZE", "STOP"]  # the array, stored last
    array = binget(ops.count("MEMOIZE") - 1)
    body = data[:-1]
    scan_pickle(body + array + b"0.", hooks=hooked_names())  # reading it is fine
    made = sglob("builtins", "bytearray") + sbu("abcdefgh") + sbu("latin-1") + b"\x86R"
    scan_pickle(PROTO5 + made + b".", hooks=hooked_names())
    with pytest.raises(FormatError, match="modify an array's bytes in place"):
        scan_pickle(PROTO5 + made + SET_FIRST_BYTE + b".", hooks=hooked_names())
    for tail, fragment in [
        (array + SET_FIRST_BYTE + b"0.", "modify an array's bytes in place"),
        (SET_FIRST_BYTE + b".", "modify an array's bytes in place"),
        (array + NONE + BUILD + b"0.", "re-fill an array made on a buffer"),
    ]:
        with pytest.raises(FormatError, match=fragment):
            scan_pickle(body + tail, hooks=hooked_names())


def test_additems_on_a_global() -> None:
    refused(PROTO5 + sglob("builtins", "set") + MARK + NONE + b"\x90.", "modify a global")


@pytest.mark.parametrize(
    ("stream", "fragment"),
    [
        (PROTO5 + b"0.", "POP needs 1"),
        (PROTO5 + NONE + b"a.", "APPEND needs 2"),
        (PROTO5 + NONE + MARK + b"a.", "innermost MARK"),
        (PROTO5 + NONE + b"t.", "without a matching MARK"),
        (PROTO5 + b"1.", "POP_MARK without a matching MARK"),
        (PROTO5 + MARK + NONE + b"d.", "odd number of items"),
        (PROTO5 + EMPTY_DICT + MARK + NONE + b"u.", "odd number of items"),
        (PROTO5 + MARK + NONE + b"u.", "no target below its MARK"),
        (PROTO5 + b"2.", "DUP needs 1"),
        (PROTO5 + REDUCE + b".", "REDUCE needs 2"),
    ],
)
def test_stack_underflow_and_mark_mismatch(stream: bytes, fragment: str) -> None:
    refused(stream, fragment)


def test_stack_and_mark_depth_limits() -> None:
    with pytest.raises(_pickle_scan.ScanError, match="stack depth exceeds 1000"):
        _pickle_scan.scan(PROTO5 + NONE * 1001 + b".", 0, 100, None, 1000, 10)
    with pytest.raises(_pickle_scan.ScanError, match="MARKs nested deeper than 10"):
        _pickle_scan.scan(PROTO5 + MARK * 11 + b".", 0, 100, None, 1000, 10)
    refused(PROTO5 + MARK * 20_000 + b".", "MARKs nested deeper than 10000")


@pytest.mark.parametrize(
    ("stream", "fragment"),
    [
        (PROTO5 + NONE + b".junk", "4 bytes of trailing data after STOP"),
        (PROTO5 + NONE + b"..", "1 bytes of trailing data"),
        (PROTO5 + NONE, "ends without STOP"),
        (b"", "ends without STOP"),
        (PROTO5 + NONE + NONE + b".", "2 items on the stack"),
        (PROTO5 + b".", "0 items on the stack"),
        (PROTO5 + MARK + NONE + b".", "unclosed MARK"),
    ],
)
def test_stop_must_end_the_stream_with_one_item(stream: bytes, fragment: str) -> None:
    refused(stream, fragment)


def test_proto_only_first_and_known() -> None:
    refused(NONE + b"\x80\x02.", "PROTO is only allowed as the first opcode")
    refused(b"\x80\x06N.", "unsupported pickle protocol 6")


def test_global_names_must_be_utf8() -> None:
    refused(b"c\xff\xfe\nx\n.", "not valid UTF-8")


def test_error_offset_points_at_the_bad_opcode() -> None:
    error = refused(PROTO5 + NONE + b"\x82\x01.", "EXT1")
    assert "at byte 3 of 6" in str(error)


def test_non_contiguous_input() -> None:
    data = np.frombuffer(pickle.dumps(1, protocol=5) * 2, dtype=np.uint8)[::2]
    with pytest.raises(FormatError, match="contiguous"):
        scan_pickle(memoryview(data))


def test_scan_accepts_bytearray_and_memoryview() -> None:
    data = pickle.dumps(SAMPLE, protocol=5)
    assert scan_pickle(bytearray(data)) == scan_pickle(memoryview(data)) == scan_pickle(data)


# --------------------------------------------------------------------------- validation hooks
def test_hook_sites_cover_the_object_from_callable_push_to_build() -> None:
    data = pickle.dumps(np.dtype(">f8"), protocol=5)
    scan = scan_pickle(data, hooks={("numpy", "dtype"): OBJECT | STATE})
    (start, end, name, kind), (state_start, build, _, state_kind) = scan.hook_sites
    assert name == ("numpy", "dtype") and (kind, state_kind) == (0, 1)
    assert data[start : start + 1] == b"\x8c"  # the module string of STACK_GLOBAL
    assert data[end - 1 : end] == BUILD
    assert data[state_start : state_start + 1] == MARK  # the state tuple began at its MARK
    assert build == end - 1


def test_hooked_objects_are_built_once_and_only_in_place() -> None:
    made = sglob("numpy", "dtype") + MARK + sbu("f8") + TUPLE + REDUCE
    twice = PROTO5 + made + NONE + BUILD + NONE + BUILD + b"."
    with pytest.raises(FormatError, match="second BUILD"):
        scan_pickle(twice, hooks={("numpy", "dtype")})
    copy = PROTO5 + made + MEMOIZE_ + b"0" + binget(0) + NONE + BUILD + b"."
    with pytest.raises(FormatError, match="memo copy of a validated object"):
        scan_pickle(copy, hooks={("numpy", "dtype")})
    assert scan_pickle(twice)  # without the hook these are legal


# --------------------------------------------------------------------------- speed
def test_scanner_throughput_on_a_large_vocabulary_dict() -> None:
    """A TfidfVectorizer-like vocabulary: 1M str -> int, ~3M opcodes (sanity, no timing assert)."""
    vocabulary = {f"token{i}": i for i in range(1_000_000)}
    data = pickle.dumps(vocabulary, protocol=5)
    scan_pickle(data)  # warm the allocator
    start = time.perf_counter()
    scan = scan_pickle(data)
    elapsed = time.perf_counter() - start
    assert scan.globals == ()
    print(f"\nscanned {len(data) / 1e6:.1f} MB in {elapsed * 1e3:.1f} ms")


# --------------------------------------------------------------------------- fuzzing
_FUZZ_SEED = pickle.dumps(
    {"w": np.arange(4.0), "n": [1, "two", 3.0, (4, 5)], "s": slice(1, 9, 2)}, protocol=5
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, len(_FUZZ_SEED) - 1), st.integers(0, 255)), max_size=6),
    st.integers(0, len(_FUZZ_SEED)),
)
def test_random_mutations_only_ever_raise_format_error(
    edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(_FUZZ_SEED)
    for position, value in edits:
        data[position] = value
    for candidate in (bytes(data), bytes(data[:cut])):
        with contextlib.suppress(FormatError):
            scan_pickle(candidate)
