"""CURVE keys, allowlists and the ZAP handler: who may talk to the broker, and as what.

Key files are ZeroMQ's certificate format (``NAME.key`` holds the public key,
``NAME.key_secret`` both keys, readable by its owner only). A broker's key directory::

    DIR/broker.key, DIR/broker.key_secret   the broker's own keypair
    DIR/clients/*.key                       public keys that may submit, watch, cancel
    DIR/workers/*.key                       public keys that may take tasks and push data
    DIR/sinks/*.key                         public keys of sink daemons (docs/sinks.md)
    DIR/admins/*.key                        client keys that may see and act on every job
                                            (others see and touch only their own jobs)

A worker's or client's directory holds its own keypair (``worker.*`` or ``client.*``) and
the broker's public key (``broker.key``). A sink's holds its keypair (``sink.*``), the
broker's public key, and ``workers/*.key``: the workers that may push to it and read from
it (it answers ZAP for its own socket, as the broker does). The broker answers ZeroMQ's authentication
requests (ZAP) itself and marks every accepted connection with its role, which it checks
on each message; its sockets enforce ZAP, so without an answer nobody gets in.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass

import zmq
from zmq.utils import z85

from ..errors import AuthenticationFailed, ConfigError
from .ratelog import RateLimitedLog
from .sockets import monitor_event

log = logging.getLogger("pymapreduce.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
CONTROL_DOMAIN = b"pymapreduce"
DATA_DOMAIN = b"pymapreduce-data"
CLIENT, WORKER, ADMIN, SINK = "client", "worker", "admin", "sink"
ROLE_DIRS = {CLIENT: "clients", WORKER: "workers", SINK: "sinks"}
ADMIN_DIR = "admins"  # an admin is a client too: its key is in both folders


# -- key files -------------------------------------------------------------------------------


def generate(directory: str, name: str) -> tuple[str, str]:
    """Write a new keypair ``NAME.key`` / ``NAME.key_secret`` (owner-only) into directory."""
    if not name or os.sep in name or name.startswith("."):
        raise ConfigError(f"key name {name!r} must be a plain file name")
    os.makedirs(directory, exist_ok=True)
    public = os.path.join(directory, f"{name}.key")
    secret = public + "_secret"
    if os.path.exists(secret):
        raise ConfigError(f"{secret} exists already; remove it first to make a new key")
    old_umask = os.umask(0o077)  # the secret file is never readable by others, even briefly
    try:
        from zmq.auth import create_certificates

        public, secret = create_certificates(directory, name)
    finally:
        os.umask(old_umask)
    os.chmod(public, 0o644)
    os.chmod(secret, stat.S_IRUSR | stat.S_IWUSR)
    return public, secret


def authorize(directory: str, role: str, public_key_file: str) -> str:
    """Add a public key file to a broker's allowlist for ``role``; returns the new path."""
    if role == ADMIN:  # an operator's key: a client that may act on every job
        authorize(directory, CLIENT, public_key_file)
    elif role not in ROLE_DIRS:
        raise ConfigError(f"role must be one of {sorted([*ROLE_DIRS, ADMIN])}, not {role!r}")
    public, _ = _load(public_key_file)
    target_dir = os.path.join(directory, ADMIN_DIR if role == ADMIN else ROLE_DIRS[role])
    os.makedirs(target_dir, exist_ok=True)
    stem = os.path.basename(public_key_file)
    for suffix in ("_secret", ".key"):
        stem = stem.removesuffix(suffix)
    target = os.path.join(target_dir, f"{stem}.key")  # the broker reads *.key files only
    if os.path.exists(target) and _load(target)[0] != public:
        # another key by the same file name (every worker's is worker.key): keep both
        import hashlib

        digest = hashlib.sha256(public).hexdigest()[:8]
        target = os.path.join(target_dir, f"{stem}-{digest}.key")
    # only the public half travels: rewrite it rather than copy a secret by mistake
    with open(target, "w") as f:
        f.write(f'metadata\ncurve\n    public-key = "{public.decode()}"\n')
    log.info("authorized %s as %s", public.decode(), role)
    return target


def _load(path: str) -> tuple[bytes, bytes | None]:
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or "."
        if os.path.isfile(folder):  # --keys DIR/client.key: the file, not its directory
            raise ConfigError(f"no key file {path}: {folder} is a file, not a key "
                              "directory; give the directory that holds it "
                              f"({os.path.dirname(folder) or '.'})")
        if not os.path.exists(folder):
            raise ConfigError(f"no key file {path}: there is no directory {folder} (a "
                              "typo? `pymapreduce keys generate DIR NAME` makes one)")
        try:
            have = sorted(n for n in os.listdir(folder) if n.endswith((".key", ".key_secret")))
        except OSError:
            have = []
        raise ConfigError(f"no key file {path}; {folder} holds "
                          f"{', '.join(have) or 'no key files'} (see `pymapreduce keys`)")
    from zmq.auth import load_certificate  # (zmq.auth: only a keyed cluster loads it)

    try:
        public, secret = load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read key file {path}: {exc}") from None
    if secret is not None:
        _warn_if_shared(path, "secret key file", "whoever reads it can act as its owner",
                        "600")
    return public, secret


def _warn_if_shared(path: str, what: str, why: str, mode: str) -> None:
    """A warning when other users of this host may read ``path`` (as ssh warns of a
    private key others can read, or one another user owns); not a refusal: the operator
    may share it on purpose."""
    try:
        st = os.stat(path)
    except OSError:
        return
    bits = stat.S_IMODE(st.st_mode)
    if st.st_uid != os.geteuid():  # (root can use it whatever its mode: its owner reads it)
        log.warning("%s %s belongs to another user (uid %d), who can read it: %s; make it "
                    "yours (chown) or give another", what, path, st.st_uid, why)
    elif bits & 0o077:
        log.warning("%s %s can be read by other users of this host (mode %03o): %s; "
                    "make it private with chmod %s %s", what, path, bits, why, mode, path)


def private_dir(path: str, what: str, holds: str) -> None:
    """Make directory ``path`` (and its parents) if missing, the last one readable by this
    user only; warn if an existing one is open to others (it ``holds`` what they must
    not read)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    _warn_if_shared(path, what, f"it holds {holds}", "700")


def cluster_keys(directory: str) -> str:
    """Make a complete key directory for one host (a broker, a worker and a client
    keypair, the latter two authorized): for tests and a single-machine secured cluster."""
    for name in ("broker", "worker", "client", "sink"):
        if not os.path.exists(os.path.join(directory, f"{name}.key_secret")):
            generate(directory, name)
    authorize(directory, WORKER, os.path.join(directory, "worker.key"))
    authorize(directory, CLIENT, os.path.join(directory, "client.key"))
    authorize(directory, SINK, os.path.join(directory, "sink.key"))
    return directory


@dataclass(frozen=True)
class PeerKeys:
    """What a client or worker needs: its keypair and the broker's public key."""

    public: bytes
    secret: bytes
    server: bytes

    @classmethod
    def load(cls, directory: str, name: str) -> PeerKeys:
        directory = os.path.expanduser(directory)
        public, secret = _load(os.path.join(directory, f"{name}.key_secret"))
        server, _ = _load(os.path.join(directory, "broker.key"))
        if not secret:
            raise ConfigError(f"{directory}/{name}.key_secret holds no secret key")
        return cls(public, secret, server)

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the broker (before it connects)."""
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = self.server


# -- the broker's side -----------------------------------------------------------------------


class Allowlists:
    """The public keys of each role, re-read when the key directory changes."""

    def __init__(self, directory: str, own: str = "broker") -> None:
        """``own``: the keypair this side serves with (``broker``; a sink: ``sink``)."""
        self.directory = directory = os.path.expanduser(directory)
        public, secret = _load(os.path.join(directory, f"{own}.key_secret"))
        if not secret:
            raise ConfigError(f"{directory}/{own}.key_secret holds no secret key")
        self.public, self.secret = public, secret
        self.roles: dict[bytes, str] = {}
        self.admins: frozenset[bytes] = frozenset()
        self._stamp: tuple = ()
        self._refusals = RateLimitedLog(log)
        self.reload()

    def allows(self, key: str, role: str) -> bool:
        """Whether the public key ``key`` (z85 text) is in the allowlist of ``role`` now."""
        return self.roles.get(key.encode()) == role

    def is_admin(self, key: str) -> bool:
        """Whether client key ``key`` may see and act on every job (DIR/admins)."""
        return key.encode() in self.admins and self.allows(key, CLIENT)

    def _fingerprint(self) -> tuple:
        stamps = []
        for sub in (*ROLE_DIRS.values(), ADMIN_DIR):
            path = os.path.join(self.directory, sub)
            try:
                stamps.append((sub, os.stat(path).st_mtime_ns,
                               tuple(sorted((e.name, e.stat().st_mtime_ns)
                                            for e in os.scandir(path)))))
            except FileNotFoundError:
                stamps.append((sub, None, ()))
            # any other error (no descriptor left: a flood of connections) raises, and the
            # lists stay as they are; taken for empty, they had revoked every key
        return tuple(stamps)

    def reload(self, force: bool = False) -> bool:
        """Re-read the allowlists if they changed on disk; returns whether they did.
        OSError if they cannot be read whole: the lists in force then stay."""
        stamp = self._fingerprint()
        if stamp == self._stamp and not force:
            return False
        roles: dict[bytes, str] = {}
        names: dict[str, str] = {}
        for role, sub in ROLE_DIRS.items():
            path = os.path.join(self.directory, sub)
            if not os.path.isdir(path):
                continue
            for public, name in _keys_in(path, stamp, sub):
                names.setdefault(public.decode(), f"{sub}/{name}")
                if roles.get(public, role) != role:
                    log.warning("key %s is in both allowlists; it keeps the role %s",
                                public.decode(), roles[public])
                    continue
                roles[public] = role
        admins = os.path.join(self.directory, ADMIN_DIR)
        self.admins = frozenset(p for p, _ in _keys_in(admins, stamp, ADMIN_DIR)) if (
            os.path.isdir(admins)) else frozenset()
        self.roles = roles
        KEY_NAMES.clear()  # (logs name a key by its allowlist file: see key_name)
        KEY_NAMES.update(names)
        self._stamp = stamp
        log.info("allowlists loaded: %d client key(s), %d worker key(s), %d sink key(s)",
                 sum(r == CLIENT for r in roles.values()),
                 sum(r == WORKER for r in roles.values()),
                 sum(r == SINK for r in roles.values()))
        return True

    def secure(self, sock: zmq.Socket, domain: bytes) -> None:
        """Make ``sock`` a CURVE server whose peers must pass ZAP (before it binds)."""
        sock.curve_server = True
        sock.curve_secretkey = self.secret
        sock.zap_domain = domain
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP answer: refused, not let in

    def answer(self, request: list[bytes]) -> list[bytes]:
        """The ZAP reply for one request (RFC 27): 200 with ``role:key`` as User-Id, or 400."""
        if len(request) < 6:
            return [b"1.0", request[1] if len(request) > 1 else b"", b"400", b"bad request",
                    b"", b""]
        version, request_id, domain, address, _identity, mechanism = request[:6]
        key = request[6] if mechanism == b"CURVE" and len(request) == 7 else None
        public = z85.encode(key) if key is not None and len(key) == 32 else None
        role = self.roles.get(public) if public else None
        if role is not None and (domain == CONTROL_DOMAIN or
                                 (domain == DATA_DOMAIN and role == WORKER)):
            return [b"1.0", request_id, b"200", b"OK", f"{role}:{public.decode()}".encode(), b""]
        who = public.decode() if public else mechanism.decode(errors="replace")
        self._refusals.warn(f"{who} from {address.decode(errors='replace')}",
                            "refused on %s: %s", domain.decode(errors="replace"),
                            "not in the allowlists" if role is None else f"a {role} key")
        return [b"1.0", request_id, b"400", b"key not allowed", b"", b""]


def _keys_in(path: str, stamp: tuple, sub: str) -> list[tuple[bytes, str]]:
    """``(public key, file name)`` of the ``*.key`` files the fingerprint ``stamp`` lists
    in ``path``; OSError if one cannot be read (zmq.auth.load_certificates' glob would skip
    them all when the directory cannot be listed, and an allowlist read as empty revokes
    every key)."""
    names = sorted(name for st in stamp if st[0] == sub for name, _ in st[2]
                   if name.endswith(".key") and not name.startswith("."))
    from zmq.auth import load_certificate

    return [(load_certificate(os.path.join(path, name))[0], name) for name in names]


# The allowlist file of each public key (z85 text) this process's allowlists hold, e.g.
# "clients/alice.key": how logs name a peer's key (an operator chose those names)
KEY_NAMES: dict[str, str] = {}


def key_name(key: str) -> str:
    """How logs name the public key ``key``: with its allowlist file when there is one."""
    name = KEY_NAMES.get(key)
    return f"{key} ({name})" if name else key


def peer_role(frame) -> tuple[str, str]:
    """``(role, public key)`` of the peer that sent ``frame`` (``("", "")`` when unsecured)."""
    try:
        user = frame.get("User-Id")
    except (zmq.ZMQError, AttributeError):
        return "", ""
    role, _, key = str(user or "").partition(":")
    return role, key


# -- clients and workers: telling a refused handshake from a slow network ----------------------


REFUSED = ("the broker refused this key: it is not in the broker's allowlist (ask its operator "
           "to run `pymapreduce keys authorize` for it)")
NEEDS_KEYS = ("the broker requires CURVE keys and this side has none: pass keys=DIR "
              "(--keys DIR) with this side's keypair and the broker's public key")
WRONG_BROKER_KEY = ("the security handshake failed: the broker's public key (broker.key) "
                    "does not match the broker at this address, or the broker there is not "
                    "secured (started without --keys), or this is not a broker's address "
                    "for clients and workers (the first address of its ready line; not its "
                    "data address or a sink's)")
NOT_SECURED = ("the security handshake failed: this side has keys but the broker at this "
               "address is not secured (or speaks another mechanism)")


MISMATCH_AFTER = 0.3  # seconds a failed handshake goes without a retry before it is final
MISMATCH_FAILURES = 3  # failed handshakes (retried each time) that mean a wrong key


class HandshakeWatch:
    """Watches a socket's handshakes and raises AuthenticationFailed on a refusal."""

    def __init__(self, sock: zmq.Socket, address: str, has_keys: bool) -> None:
        events = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                  | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                  | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECTED)
        self.monitor = sock.get_monitor_socket(events)
        self.address = address
        self.has_keys = has_keys
        self.succeeded = False
        # a TCP connection was made: with no handshake ever, what listens there is not the
        # peer's ZeroMQ socket (a broker's data address, its HTTP port, another service)
        self.reached = False
        # a failed handshake (not a refused key) that ZeroMQ did not follow by a retry:
        # a mismatch of mechanisms, final after MISMATCH_AFTER seconds
        self.pending: tuple[float, int] | None = None
        self.failures = 0  # failed handshakes before the first success

    def check(self) -> bool:
        """Raise on a refused handshake; returns whether the connection was made again
        after an earlier success (the peer restarted, or the network came back)."""
        again = False
        while self.monitor.poll(0):
            event, value = monitor_event(self.monitor)
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                again = again or self.succeeded
                self.succeeded = True
                self.pending = None
            elif event == zmq.EVENT_CONNECTED:
                self.reached = True
            elif event == zmq.EVENT_CONNECT_RETRIED:
                # ZeroMQ retries after a peer that went away (a broker killed mid-
                # handshake), never after a mismatch of mechanisms: not a refusal
                self.pending = None
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                # refused, also after a success: the key was revoked, or a broker restarted
                # with other allowlists; retrying cannot help either way
                raise AuthenticationFailed(f"{self.address}: {self._reason(event)}")
            elif not self.succeeded:
                if not self.has_keys and value != zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                    # without keys, a broker that wants them says so by a mechanism
                    # mismatch (after a first try that may end with no detail); any other
                    # failure is a peer that is no broker's client address, a data
                    # socket closing mid-handshake (a loaded machine's retries may come
                    # later than MISMATCH_AFTER): not "requires CURVE keys"
                    continue
                self.pending = (time.monotonic(), event)
                self.failures += 1
                if self.failures >= MISMATCH_FAILURES:  # fails on every try: a wrong key
                    raise AuthenticationFailed(f"{self.address}: {self._reason(event)}")
        if self.pending is not None and time.monotonic() - self.pending[0] > MISMATCH_AFTER:
            raise AuthenticationFailed(f"{self.address}: {self._reason(self.pending[1])}")
        return again

    def _reason(self, event: int) -> str:
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return REFUSED
        if not self.has_keys:
            return NEEDS_KEYS
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            return NOT_SECURED
        return WRONG_BROKER_KEY

    def not_a_broker(self) -> str:
        """Why a silent peer may be no broker, as the end of a message; '' if unknown.
        (A broker's process that is stopped, SIGSTOP or a debugger, looks the same from
        here: its kernel accepts the connection and nothing answers.)"""
        if self.reached and not self.succeeded:
            return ("; something listens there, but not a broker's address for clients and "
                    "workers (the first address of its ready line; not its data address or "
                    "its http port), or a broker that is stopped")
        return ""

    def close(self) -> None:
        self.monitor.close(0)
