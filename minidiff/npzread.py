"""Reading an .npz archive that may be hostile: every size is checked before it is allocated.

An .npz is a zip of .npy members (a header, then the raw array). What the archive declares is
checked against itself before any array is read:

    zip directory   at most MAX_READ bytes (zipfile reads it in one piece), MAX_MEMBERS entries
    each entry      "<key>.npy", unique, not encrypted, stored or deflated; stored: its size on
                    disk is its size
    all entries     no two share bytes of the file; together they expand at most MAX_RATIO
                    times (+ 1 MiB): no zip bombs
    .npy header     read in small pieces and parsed by NumPy: a numeric dtype (bool, int, uint,
                    float, complex: never objects), a shape of at most 32 dims >= 0; shape x
                    itemsize must equal the data the zip entry holds, to the byte

Every read of the file, and of a member, is at most MAX_READ bytes, so what a refusal costs
does not grow with what the file claims. The data is read last (`Npz.read`), in pieces, and
zipfile checks its CRC when the last piece arrives.

    npz = Npz(f, size)               # f: an open binary file; size: its length (os.fstat)
    npz.members["w"].nbytes          # what reading "w" will allocate
    w = npz.read("w")                # (the header's shape), the header's dtype
"""
import contextlib
import io
import math
import struct
import tokenize
import zipfile
import zlib
from typing import NamedTuple

import numpy as np
from numpy.lib import format as npy

MAX_READ = 2**20            # bytes: the most read at once, from the file or from a member
MAX_MEMBERS = 4096          # a run has 4 per parameter tensor: cifar10 1,217, 256-layer MLP 2,057
MAX_RATIO = 100             # how much the members may expand, together (deflate: ~1000)
MAX_HEADER = 10_000         # bytes of .npy header text (NumPy's own limit)
NUMERIC = "biufc"           # dtype kinds: bool, int, uint, float, complex

# What zipfile, zlib and NumPy raise on a malformed file; Npz turns each into one ValueError.
_MALFORMED = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, KeyError,
              OSError, struct.error, zlib.error, OverflowError, SyntaxError,
              tokenize.TokenError,      # NumPy tokenizes an old .npy header to mend it
              NotImplementedError)      # zipfile: a zip version or a flag it cannot read


@contextlib.contextmanager
def _one_line():
    """Whatever a malformed file makes zipfile or NumPy raise, as a one-line ValueError."""
    try:
        yield
    except _MALFORMED as e:
        kind = "" if type(e) is ValueError else f"{type(e).__name__}: "
        text = " ".join(str(e).split())
        raise ValueError(f"{kind}{text:.200}") from None


class _SmallReads:
    """The open file as zipfile sees it: no read of more than MAX_READ bytes at once. (zipfile
    reads the zip directory in one piece of the size the file claims.)"""

    def __init__(self, f, size):
        self.f, self.size = f, size

    def read(self, n=-1):
        n = self.size - self.f.tell() if n is None or n < 0 else n
        if n > MAX_READ:
            raise ValueError(f"its zip directory claims {n} bytes; at most {MAX_READ} are read")
        return self.f.read(n)

    def seek(self, offset, whence=0):
        return self.f.seek(offset, whence)

    def tell(self):
        return self.f.tell()

    def seekable(self):
        return True


class Member(NamedTuple):
    """One checked array of the archive: where its data starts, and what it holds."""
    info: zipfile.ZipInfo
    dtype: np.dtype
    shape: tuple
    fortran: bool
    offset: int             # bytes of .npy magic and header before the data

    @property
    def nbytes(self):
        return math.prod(self.shape) * self.dtype.itemsize


class Npz:
    """An open .npz archive whose directory and headers passed every check; `members` maps
    each key to its Member. Raises ValueError (one line) for anything else."""

    def __init__(self, f, size):
        f.seek(0)
        if f.read(4) != b"PK\x03\x04":
            raise ValueError("not an .npz archive")
        with _one_line():
            self.zip = zipfile.ZipFile(_SmallReads(f, size))
            infos = self.zip.infolist()
            if len(infos) > MAX_MEMBERS:
                raise ValueError(f"{len(infos)} members; at most {MAX_MEMBERS} are read")
            _check_sizes(infos, size)
            self.members = {}
            for info in infos:
                key = _check_entry(info)
                if key in self.members:
                    raise ValueError(f"two members are named {info.filename!r}")
                self.members[key] = self._member(info)

    def _member(self, info):
        """The Member of zip entry `info`, from its .npy header, read in small pieces."""
        with self.zip.open(info) as stream:
            version = npy.read_magic(stream)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"{info.filename}: .npy version {version}; minidiff reads "
                                 "1.0 and 2.0")
            length_bytes = _read_exactly(stream, 2 if version == (1, 0) else 4)
            length = int.from_bytes(length_bytes, "little")
            if length > MAX_HEADER:
                raise ValueError(f"{info.filename}: a {length}-byte .npy header; at most "
                                 f"{MAX_HEADER}")
            header = io.BytesIO(length_bytes + _read_exactly(stream, length))
        parse = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = parse(header, max_header_size=MAX_HEADER)
        offset = npy.MAGIC_LEN + len(length_bytes) + length
        member = Member(info, dtype, shape, fortran, offset)
        _check_header(member)
        return member

    def read(self, key):
        """The array `key`, read in pieces of at most MAX_READ bytes: (shape), dtype."""
        m = self.members[key]
        data = bytearray(m.nbytes)
        with _one_line(), self.zip.open(m.info) as stream:
            _read_exactly(stream, m.offset)                     # the header, checked already
            view, got = memoryview(data), 0
            while got < m.nbytes:                               # zipfile checks the CRC at
                n = stream.readinto(view[got:got + MAX_READ])   # the last piece
                if not n:
                    raise ValueError(f"{m.info.filename}: the data ends after {got} of "
                                     f"{m.nbytes} bytes")
                got += n
        flat = np.frombuffer(data, m.dtype)
        return flat.reshape(m.shape[::-1]).T if m.fortran else flat.reshape(m.shape)


def _read_exactly(stream, n):
    """n bytes (n small) from a member stream, or a ValueError if it ends first."""
    data = stream.read(n)
    if len(data) != n:
        raise ValueError(f"a member ends inside its .npy header ({len(data)} of {n} bytes)")
    return data


def _check_entry(info):
    """The key of zip entry `info` (its name without .npy), if the directory's claims for it
    are ones an honest .npz makes; a ValueError naming the entry if not."""
    name = info.filename
    if not name.endswith(".npy") or name == ".npy":
        raise ValueError(f"member {name!r:.80} is not an .npy array")
    if info.flag_bits & 1:
        raise ValueError(f"{name}: encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(f"{name}: compression method {info.compress_type}; minidiff reads "
                         "stored or deflated members")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise ValueError(f"{name}: stored, yet {info.compress_size} bytes expand to "
                         f"{info.file_size}")
    return name[:-len(".npy")]


def _check_sizes(infos, size):
    """The members fit in the file without sharing bytes, and expand at most MAX_RATIO times
    (+ 1 MiB for small arrays of zeros, which deflate 1000 to 1): no zip bombs."""
    packed, unpacked = sum(i.compress_size for i in infos), sum(i.file_size for i in infos)
    if packed > size:
        raise ValueError(f"its members claim {packed} bytes of a {size}-byte file (they "
                         "overlap, or the file was cut)")
    if unpacked > MAX_RATIO * packed + 2**20:
        raise ValueError(f"its members' {packed} bytes claim to expand to {unpacked}, more "
                         f"than {MAX_RATIO} times (a zip bomb?)")


def _check_header(m):
    """A numeric dtype, a sane shape, and exactly as many bytes of data as the zip holds."""
    name = m.info.filename
    if m.dtype.hasobject:
        raise ValueError(f"{name}: holds pickled Python objects, which minidiff never loads")
    if m.dtype.kind not in NUMERIC or m.dtype.subdtype is not None:
        raise ValueError(f"{name}: dtype {str(m.dtype):.60}; minidiff reads numeric arrays "
                         "only (bool, int, uint, float, complex)")
    if len(m.shape) > 32 or any(d < 0 for d in m.shape):
        raise ValueError(f"{name}: shape {str(m.shape):.80} (at most 32 dims, each >= 0)")
    data = m.info.file_size - m.offset
    if m.nbytes != data:
        raise ValueError(f"{name}: its header declares {str(m.shape):.80} {m.dtype} "
                         f"({m.nbytes} bytes), its zip entry {data} bytes of data")
