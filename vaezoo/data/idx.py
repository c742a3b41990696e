"""A small reader and writer of IDX files (the MNIST format), gzip-compressed or not."""

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from vaezoo.errors import DataError

# IDX type code -> big-endian numpy dtype
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def decompress(raw, source="<bytes>"):
    """``raw`` decompressed if it is gzip-compressed (detected by its magic bytes), else ``raw``."""
    if bytes(raw[:2]) != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{source} is not a valid gzip file ({err}); expected a gzip-compressed IDX file") from None


def read_bytes(path):
    """The content of the file ``path``, decompressed if it is gzip-compressed."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    return decompress(raw, str(path))


def parse_idx(buf, source="<bytes>"):
    """Decode the IDX bytes ``buf`` into a numpy array in native byte order.

    The header is two zero bytes, a type code, the number of dimensions ``ndim``, then ``ndim``
    big-endian uint32 sizes; the payload that follows must hold exactly the product of the sizes.
    A malformed header or a payload of the wrong length raises :class:`DataError` naming ``source``.
    """
    buf = memoryview(buf).cast("B")
    if len(buf) < 4:
        raise DataError(f"{source} is not an IDX file: {len(buf)} bytes, expected a 4-byte magic number and a header")
    zero0, zero1, code, ndim = buf[0], buf[1], buf[2], buf[3]
    magic = int.from_bytes(bytes(buf[:4]), "big")
    if zero0 != 0 or zero1 != 0 or code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{source} is not an IDX file: magic number 0x{magic:08x}, expected 0x0000TTDD "
            f"with type TT in {{08,09,0b,0c,0d,0e}} and DD >= 1 dimensions"
        )
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{source} is truncated: {len(buf)} bytes, expected an IDX header of {header} bytes")
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(buf) != expected:
        what = "truncated" if len(buf) < expected else "too long"
        raise DataError(
            f"{source} is {what}: {len(buf)} bytes, expected {expected} for an IDX array of shape "
            f"{dims} and type {dtype.str[1:]}"
        )
    arr = np.frombuffer(buf, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path):
    """Read the IDX file ``path`` (gzip-compressed or not) into a numpy array."""
    return parse_idx(read_bytes(path), source=str(path))


def encode_idx(array):
    """The IDX bytes of ``array`` (uint8, int8, int16, int32, float32 or float64)."""
    array = np.asarray(array)
    for code, dtype in IDX_DTYPES.items():
        if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            break
    else:
        raise TypeError(f"cannot write dtype {array.dtype} to IDX")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()
