"""The IDX reader on tiny handmade files, gzipped and not, well-formed and malformed."""

import gzip

import numpy as np
import pytest

from vaezoo.data.idx import encode_idx, parse_idx, read_idx
from vaezoo.errors import DataError

# a 2x3x2 uint8 array, written by hand: magic 0x00000803, dims 2, 3, 2 (big-endian uint32), payload
HEADER = bytes([0, 0, 0x08, 3]) + bytes([0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 2])
PAYLOAD = bytes(range(12))
EXPECTED = np.arange(12, dtype=np.uint8).reshape(2, 3, 2)


@pytest.mark.parametrize("compressed", [False, True])
def test_reads_handmade_idx(tmp_path, compressed):
    raw = HEADER + PAYLOAD
    path = tmp_path / ("tiny-idx3-ubyte" + (".gz" if compressed else ""))
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    array = read_idx(path)
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array, EXPECTED)


def test_big_endian_payload_is_decoded_natively():
    raw = bytes([0, 0, 0x0C, 1, 0, 0, 0, 2]) + (258).to_bytes(4, "big") + (-1).to_bytes(4, "big", signed=True)
    array = parse_idx(raw)
    assert array.dtype == np.dtype("int32") and array.dtype.isnative
    assert array.tolist() == [258, -1]


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_encode_parse_round_trip(dtype):
    array = (np.arange(24).reshape(2, 3, 4) - (0 if dtype == "uint8" else 5)).astype(dtype)
    back = parse_idx(encode_idx(array))
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(
    "raw, words",
    [
        (HEADER + PAYLOAD[:-1], ["truncated", "27 bytes", "expected 28", "(2, 3, 2)"]),
        (HEADER + PAYLOAD + b"\x00", ["too long", "29 bytes", "expected 28"]),
        (HEADER[:10], ["truncated", "expected an IDX header of 16 bytes"]),
        (bytes([0, 1, 0x08, 3]) + HEADER[4:] + PAYLOAD, ["magic number 0x00010803"]),
        (bytes([0, 0, 0x07, 3]) + HEADER[4:] + PAYLOAD, ["magic number 0x00000703"]),
        (bytes([0, 0, 0x08, 0]), ["magic number 0x00000800"]),
        (b"\x00\x00", ["2 bytes"]),
    ],
)
def test_malformed_idx_raises_one_line_naming_the_file(tmp_path, raw, words):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message


def test_truncated_gzip_raises_naming_the_file(tmp_path):
    path = tmp_path / "cut-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(HEADER + PAYLOAD)[:-6])
    with pytest.raises(DataError, match="not a valid gzip file") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_missing_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope-idx1-ubyte")
