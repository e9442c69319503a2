"""How failures are reported (a new user's trial): a damaged compressed input fails its
job without useless retries, naming the file; a failing reduce names its key; a
compressed input's failing line is placed in its decompressed text."""

from __future__ import annotations

import bz2
import errno
import gzip
import lzma

import pytest
import zstandard

from pymapreduce import Client, InputDamaged, InputError, Job, JobFailed, read_jsonl, read_text
from pymapreduce.kernels import KeyFailed, reduce_groups
from pymapreduce.lines import _read
from pymapreduce.spill.reduceside import _reduce_stream

from .conftest import wait_workers
from .jobs import WordCount
from .test_observe import get, get_json, start_broker, wait_for

TEXT = b"".join(b"line %d some words here\n" % i for i in range(20000))
COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
            # (with its content checksum, as the zstd tool writes it: without one, bytes
            # changed in a frame's data decode to other bytes and nothing can tell)
            ".zst": lambda data: zstandard.ZstdCompressor(write_checksum=True).compress(data)}


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


# -- a failing reduce names its key -------------------------------------------------------

SECRET = "s3cr3t-key"
LONG = SECRET + "x" * 300


class FailsAtKey(Job):
    """``reduce`` raises at the key SECRET (its message holds no key); ``value_key``,
    with ``sort_fails``, raises there instead."""

    def __init__(self, bad: str = SECRET, sort_fails: bool = False) -> None:
        self.bad = bad
        self.sort_fails = sort_fails

    def map(self, key, line):
        for word in line.split():
            yield word, 1

    def reduce(self, word, counts):
        if word == self.bad:
            raise ValueError("cannot reduce this one")
        return sum(counts)


class EmitsFailsAtKey(FailsAtKey):
    def reduce(self, word, counts):
        if word == self.bad:
            raise ValueError("cannot reduce this one")
        yield word, sum(counts)


class SortFailsAtKey(FailsAtKey):
    def value_key(self, n):
        raise ValueError("cannot sort these")


@pytest.mark.parametrize("job", [FailsAtKey(), EmitsFailsAtKey(), FailsAtKey(LONG)])
def test_a_failing_reduce_names_its_key_but_not_to_the_dashboard(daemons, job):
    address, http = start_broker(daemons, "--heartbeat", "0.2", "--liveness", "1.0",
                                 "--max-attempts", "2")
    daemons.worker(address, 2)
    wait_workers(address, 2)
    records = [(i, f"a b {job.bad} c") for i in range(30)]
    with Client(address) as client:
        handle = client.submit(job, records, map_tasks=3, reducers=1)
        with pytest.raises(JobFailed) as info:
            handle.result(60)
    failed = info.value
    shown = repr(job.bad) if len(repr(job.bad)) <= 200 else repr(job.bad)[:197] + "..."
    assert failed.position == {"partition": 0, "key": shown}, failed.position
    assert f"\nInput: key {shown} (reduce partition 0)\n" in str(failed)
    assert "ValueError: cannot reduce this one" in str(failed).splitlines()[0]
    # the events, the job's page and its history keep the position without the key
    wait_for(lambda: get(f"{http}api/jobs/{handle.job_id}")[0] == 200)
    for url in (f"{http}api/events?job={handle.job_id}&format=json",
                f"{http}api/jobs/{handle.job_id}", f"{http}api/history"):
        status, body = get(url)
        assert status == 200 and SECRET not in body.decode(), url
        assert "cannot reduce this one" in body.decode() or "history" in url  # (shown)
    events = get_json(f"{http}api/events?job={handle.job_id}&format=json")["events"]
    positions = [e["position"] for e in events if e["type"] == "failed"]
    assert positions and all(p == {"partition": 0} for p in positions), positions


@pytest.mark.parametrize("job", [FailsAtKey(), EmitsFailsAtKey(), SortFailsAtKey()])
def test_reduce_kernels_name_the_key_they_failed_at(job):
    groups = {k: [1, 2] for k in ("a", "b", SECRET, "z")}
    with pytest.raises(KeyFailed) as info:
        reduce_groups(job, groups)
    assert info.value.key == (SECRET if not job._has("value_key") else "a")
    assert isinstance(info.value.__cause__, ValueError)
    if job._has("value_key"):
        return

    class Out:
        def add(self, k, v):
            pass

    with pytest.raises(KeyFailed) as info:  # (a reduce task under a memory budget)
        _reduce_stream(job, iter(groups.items()), Out())
    assert info.value.key == SECRET


# -- a compressed input's failing line: an offset in its decompressed text -------------------


class FailsAtBad(WordCount):
    def map(self, offset, line):
        if line == "BAD":
            raise ValueError("a bad line")
        yield from super().map(offset, line)


@pytest.mark.parametrize("ext", ["", ".gz", ".bz2"])
def test_a_compressed_inputs_failing_line_is_placed_in_its_decompressed_text(
        cluster, tmp_path, ext):
    text = TEXT[:TEXT.index(b"\n", 20000) + 1] + b"BAD\n"
    offset = text.index(b"BAD")
    path = tmp_path / f"in.txt{ext}"
    path.write_bytes(COMPRESS[ext](text) if ext else text)
    jsonl = tmp_path / f"in.jsonl{ext}"
    rows = b'{"a": 1}\n' * 30 + b"not json\n"
    jsonl.write_bytes(COMPRESS[ext](rows) if ext else rows)
    with Client(cluster) as client:
        with pytest.raises(JobFailed) as mapped:
            client.submit(FailsAtBad(), read_text(str(path)), reducers=1).result(60)
        with pytest.raises(JobFailed) as parsed:
            client.submit(WordCount(), read_jsonl(str(jsonl)), reducers=1).result(60)
    where = "" if not ext else " of its decompressed text"
    assert f"\nInput: file {path}, the line at byte {offset}{where} (map split 0)\n" \
        in str(mapped.value), str(mapped.value)
    assert f"BadRecord: {jsonl}: the line at byte {rows.index(b'not')}{where} is not " \
        "JSON" in str(parsed.value).splitlines()[0], str(parsed.value)


def test_a_key_whose_repr_raises_leaves_the_task_s_own_error():
    from pymapreduce.workers.runner import _short

    class Broken:
        def __repr__(self):
            raise RuntimeError("no repr")

    assert _short(Broken()) == "<Broken whose repr() fails>"
    assert _short("x" * 300) == repr("x" * 300)[:197] + "..."


def test_a_zst_input_of_several_frames_is_read_whole_and_a_truncated_one_is_refused(tmp_path):
    """zstandard's own reader ends quietly where a truncated file ends; pymapreduce's
    says so, and still reads every frame of a file of several (as ``zstd -d`` does)."""
    from pymapreduce.lines import _open_zstd

    zstd = zstandard.ZstdCompressor()
    whole = tmp_path / "two.zst"
    whole.write_bytes(zstd.compress(TEXT) + zstd.compress(b"one more line\n"))
    with _open_zstd(str(whole)) as f:
        assert f.read() == TEXT + b"one more line\n"
    (tmp_path / "empty.zst").write_bytes(b"")
    with _open_zstd(str(tmp_path / "empty.zst")) as f:
        assert f.read() == b""
    cut = tmp_path / "cut.zst"
    cut.write_bytes(zstd.compress(TEXT)[:-7])
    with pytest.raises(EOFError), _open_zstd(str(cut)) as f:
        f.read()
