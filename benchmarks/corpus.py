"""Build a text corpus of a given size from real text found on this machine.

The source is the Python standard library's ``.py`` files plus any ``.txt``/``.rst`` beside them
and the Python docs under ``sys.prefix`` (site-packages excluded, so installing a package does not
change the corpus), read as UTF-8 with ``errors='replace'``, in sorted path order. That text is
repeated as needed and cut at line boundaries into ``files`` parts of about equal size whose total
is at most ``size_mb`` MiB. The same machine and size give the same bytes; a corpus already on
disk with the same parameters is reused.

    python benchmarks/corpus.py --size-mb 256 --out /tmp/pmr-corpus
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig

MIB = 1 << 20
TEXT_SUFFIXES = (".py", ".txt", ".rst")
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
MAX_LINE = 16 * 1024  # longer "lines" are data blobs, not text; they would also outgrow a part
MANIFEST = "corpus.json"


def source_files() -> list[str]:
    """Sorted paths of the standard library's sources and the Python docs on this machine."""
    roots = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
    doc = os.path.join(sys.prefix, "share", "doc")
    if os.path.isdir(doc):
        roots.update(os.path.join(doc, d) for d in os.listdir(doc) if d.startswith("python"))
    roots.add(os.path.join(sys.prefix, "Doc"))
    found = set()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
            found.update(os.path.join(dirpath, f) for f in filenames if f.endswith(TEXT_SUFFIXES))
    return sorted(found)


def base_text() -> bytes:
    """All source files as one UTF-8 blob of ``\\n``-terminated lines."""
    parts = []
    for path in source_files():
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = [ln if ln.endswith("\n") else ln + "\n" for ln in f]
        except OSError:
            continue
        parts.append("".join(ln for ln in lines if len(ln) <= MAX_LINE))
    blob = "".join(parts).encode("utf-8")
    if not blob:
        raise SystemExit("corpus: found no text files under the Python installation")
    return blob


def _manifest(size_mb: int, files: int) -> dict:
    return {"size_mb": size_mb, "files": files, "python": sys.version.split()[0]}


def _cached(out_dir: str, size_mb: int, files: int) -> list[str] | None:
    try:
        with open(os.path.join(out_dir, MANIFEST)) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    if saved.get("params") != _manifest(size_mb, files):
        return None
    paths = [os.path.join(out_dir, name) for name in saved["sizes"]]
    for path, size in zip(paths, saved["sizes"].values()):
        if not os.path.isfile(path) or os.path.getsize(path) != size:
            return None
    return paths


def build_corpus(out_dir: str, size_mb: int, files: int = 8) -> list[str]:
    """Write (or reuse) ``files`` parts ``part-000.txt``... totalling at most ``size_mb`` MiB.

    Returns the part paths. Each part ends at a line boundary.
    """
    cached = _cached(out_dir, size_mb, files)
    if cached:
        return cached
    os.makedirs(out_dir, exist_ok=True)
    blob = base_text()
    budget = size_mb * MIB // files
    pos, sizes, paths = 0, {}, []
    for i in range(files):
        path = os.path.join(out_dir, f"part-{i:03d}.txt")
        left = budget
        with open(path, "wb") as out:
            while left > 0:
                if len(blob) - pos <= left:  # the rest of the blob fits: write it and wrap
                    out.write(blob[pos:])
                    left -= len(blob) - pos
                    pos = 0
                    continue
                cut = blob.rfind(b"\n", pos, pos + left)
                if cut >= 0:
                    out.write(blob[pos:cut + 1])
                    pos = cut + 1
                break
        sizes[os.path.basename(path)] = os.path.getsize(path)
        paths.append(path)
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        json.dump({"params": _manifest(size_mb, files), "sizes": sizes}, f, indent=1)
    return paths


def main() -> int:
    """CLI: build the corpus and print its parts."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=256, help="total size in MiB (default 256)")
    ap.add_argument("--out", default="/tmp/pmr-corpus", help="output folder")
    ap.add_argument("--files", type=int, default=8, help="number of part files (default 8)")
    args = ap.parse_args()
    paths = build_corpus(args.out, args.size_mb, args.files)
    total = sum(os.path.getsize(p) for p in paths)
    print(f"{len(paths)} files, {total} bytes ({total / MIB:.1f} MiB) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
