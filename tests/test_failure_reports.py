"""How failures are reported (a new user's trial): a damaged compressed input fails its
job without useless retries, naming the file; a failing reduce names its key; a
compressed input's failing line is placed in its decompressed text."""

from __future__ import annotations

import bz2
import errno
import gzip
import lzma

import pytest

from pymapreduce import Client, InputDamaged, InputError, JobFailed, read_text
from pymapreduce.lines import _read

from .jobs import WordCount

TEXT = b"".join(b"line %d some words here\n" % i for i in range(20000))
COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


# -- a damaged compressed input ---------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
@pytest.mark.parametrize("ext", sorted(COMPRESS))
def test_a_damaged_compressed_input_fails_its_job_without_retries_naming_it(
        cluster, tmp_path, ext, damage):
    data = bytearray(COMPRESS[ext](TEXT))
    if damage == "truncated":
        data = data[:len(data) // 2]
    else:  # bytes changed in the middle: a bad CRC, or data its decompressor refuses
        data[len(data) // 2] ^= 0xFF
        data[len(data) // 2 + 1] ^= 0xFF
    path = tmp_path / f"in.txt{ext}"
    path.write_bytes(bytes(data))
    with Client(cluster) as client:
        with pytest.raises(JobFailed) as info:
            client.submit(WordCount(), read_text(str(path)), reducers=1).result(60)
    first = str(info.value).splitlines()[0]
    # no retry can mend it: failed once a second attempt said so, not after 4 attempts
    assert "map-0 failed 2 times" in first, first
    assert f"InputDamaged: cannot read input {str(path)!r}: its compressed bytes are " \
           "damaged" in first, first
    assert info.value.position["path"] == str(path)


class _Unreadable:
    """A file whose read fails as ``exc`` (what a decompressor or a mount raised)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def read(self, size: int = -1) -> bytes:
        raise self.exc


def test_only_damage_is_final_not_a_file_unreadable_for_now():
    """An I/O error (a network mount that failed for now, a file gone) is a plain
    InputError, which the broker retries; the decompressors' errors for damaged bytes
    are InputDamaged, which no retry can mend."""
    for exc in (OSError(errno.EIO, "Input/output error"),
                OSError(errno.ESTALE, "Stale file handle"),
                FileNotFoundError(errno.ENOENT, "No such file or directory")):
        with pytest.raises(InputError) as info:
            _read(_Unreadable(exc), "/mnt/nfs/in.txt.gz", 10)
        assert not isinstance(info.value, InputDamaged), exc
    for exc in (EOFError("Compressed file ended before the end-of-stream marker was "
                         "reached"), gzip.BadGzipFile("CRC check failed"),
                lzma.LZMAError("Corrupt input data"), OSError("Invalid data stream")):
        with pytest.raises(InputDamaged):
            _read(_Unreadable(exc), "/data/in.txt.gz", 10)
    with pytest.raises(InputError) as info:  # a plain file: no decompressor to blame
        _read(_Unreadable(EOFError("ended")), "/data/in.txt", 10)
    assert not isinstance(info.value, InputDamaged)
