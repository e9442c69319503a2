"""URLs through fsspec: which paths are URLs, the filesystem that serves one, storage
options that may travel with a job, listing with sizes, and reading a byte range.

Local paths (and ``file://`` URLs, turned into paths) never come here: they keep the
plain ``open``/``os`` fast path of ``lines.py``. fsspec and the package of each scheme
(s3fs for ``s3://``, gcsfs for ``gs://``, aiohttp for ``http(s)://``) are optional:
``pip install 'pymapreduce[s3]'``; a scheme whose package is missing is one clear error.

Credentials never travel with a job: workers and clients find their own in the usual
places (environment variables such as ``AWS_ACCESS_KEY_ID``, ``~/.aws/credentials``,
fsspec's config and ``FSSPEC_<SCHEME>_<OPTION>`` variables, instance metadata). A storage
option or a URL that looks like a credential is refused on the client
(:func:`check_storage_options`), before anything is sent.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import ConfigError, InputError

# Option names (at any depth) that carry credentials: refused, never sent to the broker.
SECRET_NAME = re.compile(r"key|secret|token|passw|credential|auth|session|signature|"
                         r"\bsig\b|\bsas\b|cert|cookie|private", re.IGNORECASE)
MAX_OPTION_ENTRIES = 32  # entries of a storage options map, all levels together
MAX_OPTION_TEXT = 1000  # characters of one option's value or name
MAX_OPTION_DEPTH = 3
INSTALL_HINT = "pip install 'pymapreduce[s3]' (fsspec and s3fs; gcsfs for gs://, aiohttp for http)"


class StoreUnavailable(ConfigError):
    """A URL's scheme needs a package that is not installed here (fsspec itself, or s3fs,
    gcsfs...); the message says which and how to install it."""


def is_url(path: str) -> bool:
    """Whether ``path`` is read through fsspec (a URL other than ``file://``)."""
    return "://" in path and not path.startswith("file://")


_ONE_SLASH = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/(?!/)")


def url_typo(path: str) -> str:
    """A hint when ``path`` looks like a URL missing a slash (``s3:/bucket/out``), which
    would otherwise be taken for a local path; "" if it does not."""
    if _ONE_SLASH.match(path):
        scheme, rest = path.split(":/", 1)
        return f" (a URL needs two slashes after its scheme: did you mean '{scheme}://{rest}'?)"
    return ""


def no_credentials(exc: BaseException) -> bool:
    """Whether ``exc`` says the store found no credentials in this process (botocore's
    NoCredentialsError, google-auth's DefaultCredentialsError...): a setup to mend where
    the process runs, not a fault of pymapreduce."""
    return any("Credential" in t.__name__ for t in type(exc).__mro__)


def credentials_error(url: str, exc: BaseException) -> ConfigError:
    return ConfigError(
        f"{redact(url)}: this process has no credentials for the store "
        f"({type(exc).__name__}: {exc}); set them where it runs (its environment, e.g. "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the store's config files): "
        "docs/store.md")


def local_path(path: str) -> str:
    """A plain path as it is; a ``file://`` URL as the path it names."""
    if path.startswith("file://"):
        return unquote(urlsplit(path).path) or "/"
    return path


def check_storage_options(options: Any, where: str = "storage_options") -> dict:
    """Storage options as they may travel with a job: a map of plain values (str, int,
    float, bool, None, and maps of them, 3 levels deep, 32 entries in all), none of whose
    names looks like a credential; ConfigError names what is refused."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(f"{where} must be a dict, got {type(options).__name__}")
    count = [0]

    def check(value: Any, path: str, depth: int) -> Any:
        if isinstance(value, dict):
            if depth >= MAX_OPTION_DEPTH:
                raise ConfigError(f"{where}: {path} nests deeper than {MAX_OPTION_DEPTH} maps")
            out = {}
            for name, item in value.items():
                count[0] += 1
                if count[0] > MAX_OPTION_ENTRIES:
                    raise ConfigError(f"{where}: more than {MAX_OPTION_ENTRIES} entries")
                if not isinstance(name, str) or not 0 < len(name) <= MAX_OPTION_TEXT:
                    raise ConfigError(f"{where}: option names are short strings, not {name!r:.40}")
                if SECRET_NAME.search(name):
                    raise ConfigError(
                        f"{where}: {path + name!r} looks like a credential, and credentials "
                        "never travel with a job (through the broker, to every worker): set "
                        "them where the client and workers run (environment variables such as "
                        "AWS_ACCESS_KEY_ID, ~/.aws/credentials, fsspec's config), see docs/store.md")
                out[name] = check(item, f"{path}{name}.", depth + 1)
            return out
        if value is None or type(value) in (bool, int, float):
            return value
        if isinstance(value, str) and len(value) <= MAX_OPTION_TEXT:
            return value
        raise ConfigError(f"{where}: {path.rstrip('.')} must be a str (at most "
                          f"{MAX_OPTION_TEXT} characters), a number, a bool, None or a map")

    return check(options, "", 0)


def check_url(url: str) -> str:
    """Refuse a URL that carries a credential itself (``https://user:pw@host``, a signed
    query): it would travel with the job. Returns the URL."""
    parts = urlsplit(url)
    if parts.password is not None:
        raise ConfigError(f"the URL {redact(url)!r} holds a password: credentials never travel "
                          "with a job; give them where the client and workers run")
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if SECRET_NAME.search(name):
            raise ConfigError(f"the URL {redact(url)!r} holds a credential in its query "
                              f"({name}): a signed URL would travel with the job to every "
                              "worker; give credentials where the client and workers run")
    return url


def redact(url: str) -> str:
    """``url`` without its query and password, to be shown in a message."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def filesystem(url: str, storage: dict | None = None) -> tuple[Any, str]:
    """The fsspec filesystem serving ``url`` and the path within it; StoreUnavailable when
    fsspec or the scheme's package is not installed, InputError for an unknown scheme."""
    try:
        import fsspec
    except ImportError:
        raise StoreUnavailable(f"{redact(url)}: URLs are read and written through fsspec, "
                               f"which is not installed: {INSTALL_HINT}") from None
    try:
        return fsspec.core.url_to_fs(url, **(storage or {}))
    except ImportError as exc:
        raise StoreUnavailable(f"{redact(url)}: its scheme needs a package that is not "
                               f"installed ({exc}): {INSTALL_HINT}") from None
    except ValueError as exc:
        raise InputError(f"{redact(url)}: {exc} (fsspec knows no such scheme)") from None


def full_url(fs: Any, path: str) -> str:
    """A path within ``fs`` as a URL again (``bucket/key`` -> ``s3://bucket/key``)."""
    return fs.unstrip_protocol(path)


def _hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def list_url(pattern: str, storage: dict | None = None) -> list[tuple[str, int]]:
    """The objects a URL names, sorted, with their sizes from the listing (one request
    per prefix, not one per object): a glob, a "directory" (every object below it, but
    names starting with ``.`` or ``_``), or one object. InputError when it names nothing."""
    fs, path = filesystem(check_url(pattern), storage)
    fs.invalidate_cache()  # (fsspec keeps listings per process: a job lists afresh)
    try:
        if any(c in path for c in "*?["):
            found = fs.glob(path, detail=True)
        elif fs.isdir(path):
            below = fs.find(path, detail=True)
            root = path.rstrip("/") + "/"
            found = {p: info for p, info in below.items()
                     if not _hidden(p[len(root):] if p.startswith(root) else p)}
            if not found:
                raise InputError(f"input directory {redact(pattern)!r} holds no file")
        else:
            found = {path: fs.info(path)}
    except FileNotFoundError as exc:
        raise InputError(f"input {redact(pattern)!r}: no such object or bucket ({exc})") from None
    except PermissionError as exc:
        raise InputError(f"input {redact(pattern)!r}: access denied ({exc})") from None
    except OSError as exc:
        raise InputError(f"input {redact(pattern)!r} cannot be listed: {exc}") from None
    except Exception as exc:
        if no_credentials(exc):
            raise credentials_error(pattern, exc) from None
        raise
    files = sorted((p, _size(info)) for p, info in found.items()
                   if info.get("type", "file") == "file")
    if not files:
        raise InputError(f"input {redact(pattern)!r} matches no object")
    if _streamed(fs) and not _reads_ranges(fs, files[0][0]):
        files = [(p, -1) for p, _ in files]  # (the same server: none can be cut)
    return [(full_url(fs, p), size) for p, size in files]


def _size(info: dict) -> int:
    """An object's size from its listing; -1 when the store does not say."""
    size = info.get("size")
    return int(size) if isinstance(size, int) and size >= 0 else -1


def _streamed(fs: Any) -> bool:
    """Whether ``fs`` is HTTP, whose servers may not read byte ranges."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("http", "https")


def _reads_ranges(fs: Any, path: str) -> bool:
    """Whether the server of ``path`` answers a ranged GET with that range (one small
    request per listing): if not, its objects are read whole, from the start."""
    try:
        return len(fs.cat_file(path, start=0, end=1)) == 1
    except (OSError, ValueError):
        return False


def object_size(url: str, storage: dict | None = None) -> int:
    """The size of one object, in bytes (InputError when it is missing)."""
    fs, path = filesystem(url, storage)
    try:
        return int(fs.size(path) or 0)
    except OSError as exc:
        raise InputError(f"cannot read input {redact(url)!r}: {_why(exc)}") from None
    except Exception as exc:
        if no_credentials(exc):
            raise credentials_error(url, exc) from None
        raise


def open_url(url: str, storage: dict | None = None, start: int = 0,
             length: int | None = None) -> Any:
    """A binary file object on ``url`` at ``start``: read ahead in blocks of about the
    range's ``length`` (one ranged GET for a split of an object store, not one per
    read), capped at 64 MiB."""
    fs, path = filesystem(url, storage)
    block = 8 << 20 if length is None else max(1 << 20, min(length + (1 << 20), 64 << 20))
    if length is None and _streamed(fs):
        block = 0  # a whole object over HTTP: streamed (the server may read no range)
    try:
        f = fs.open(path, "rb", block_size=block, cache_type="readahead")
        if start:
            f.seek(start)
        return f
    except OSError as exc:
        raise InputError(f"cannot read input {redact(url)!r}: {_why(exc)}") from None
    except Exception as exc:
        if no_credentials(exc):
            raise credentials_error(url, exc) from None
        raise


def _why(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no such object or bucket ({exc})"
    if isinstance(exc, PermissionError):
        return f"access denied ({exc})"
    return f"{type(exc).__name__}: {exc}"
