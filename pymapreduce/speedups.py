"""The shuffle's per-key loops in C, when the optional extension was built.

``pymapreduce/_speedups.c`` is compiled by ``pip install`` where a C compiler is found
(``setup.py``: an optional extension, so an install without one goes on). Without it, or
with ``PYMAPREDUCE_PURE=1`` in the environment, ``bucket_pairs``, ``bucket_groups``,
``append_pairs``, ``group_pairs``, ``sort_strs``, ``str_order``, ``pack_buckets``,
``bucket_pack``, ``bucket_groups_pack``, ``pack_notes``, ``attempt_ids``,
``pack_splits``, ``json_lines``, ``sort_pairs``, ``pack_columns`` and
``merge_runs_json`` are None and every caller runs its own Python code, which computes
the same thing (the tests run both and compare). What they replace, and what that saves,
is in docs/ARCHITECTURE.md ("The shuffle's per-key loops in C").
"""

from __future__ import annotations

import os
from array import array
from typing import Any

# an array's typecode of uint64 items: "L" where an unsigned long has 64 bits (its items
# are converted by a loop over an int's digits, "Q"'s by a general byte-array copy)
UINT64 = "L" if array("L").itemsize == 8 else "Q"

bucket_pairs: Any = None
bucket_groups: Any = None
append_pairs: Any = None
group_pairs: Any = None
str_crc32: Any = None
sort_strs: Any = None  # sorted() of a list of exact str (None: not all exact str)
str_order: Any = None  # sorted(range(len(keys)), key=keys.__getitem__), the same way
pack_buckets: Any = None  # a map task's partitions packed from its buckets (buckets.py)
bucket_pack: Any = None  # bucket_pairs and pack_buckets in one pass
bucket_groups_pack: Any = None  # bucket_groups and pack_buckets in one pass
pack_notes: Any = None  # the event log's noted commits packed (observe/events.py)
attempt_ids: Any = None  # a TASKS message's attempt identifiers as uint64 bytes
pack_splits: Any = None  # a submission's in-memory records cut and packed (client/submit.py)
json_lines: Any = None  # a part file's JSON lines from two columns (client/output.py)
sort_pairs: Any = None  # a plain sort's pairs in key order (rangesort.py)
pack_columns: Any = None  # a plain sort's runs packed (rangesort.py)
merge_runs_json: Any = None  # a plain sort's runs merged into its part file's lines

if os.environ.get("PYMAPREDUCE_PURE", "") in ("", "0"):
    try:
        from . import _speedups as _c

        bucket_pairs, bucket_groups = _c.bucket_pairs, _c.bucket_groups
        append_pairs, group_pairs, str_crc32 = _c.append_pairs, _c.group_pairs, _c.str_crc32
        sort_strs, str_order, pack_buckets = _c.sort_strs, _c.str_order, _c.pack_buckets
        bucket_pack, bucket_groups_pack = _c.bucket_pack, _c.bucket_groups_pack
        pack_notes, attempt_ids, pack_splits = _c.pack_notes, _c.attempt_ids, _c.pack_splits
        json_lines, sort_pairs, pack_columns = _c.json_lines, _c.sort_pairs, _c.pack_columns
        merge_runs_json = _c.merge_runs_json
    except (ImportError, AttributeError):  # not built, or built from older source: the
        bucket_pairs = bucket_groups = append_pairs = group_pairs = str_crc32 = None
        sort_strs = str_order = pack_buckets = bucket_pack = bucket_groups_pack = None
        pack_notes = attempt_ids = pack_splits = json_lines = sort_pairs = None
        pack_columns = merge_runs_json = None


def built() -> bool:
    """Whether the C loops are in use in this process."""
    return bucket_pairs is not None
