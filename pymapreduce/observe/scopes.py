"""Client tokens: an HTTP token that shows one client's jobs only.

A broker with ``--keys`` and ``--http`` has one token (``DIR/http.token``) that shows
everything, as an admin key does: for operators. A *client token* shows only the jobs
submitted with one client key (as ``pymapreduce status`` and ``events`` show them to that
key): ``client.<public key, hex>.<MAC>``, where the MAC is an HMAC-SHA256 of the public
key under the broker's token. The broker keeps no list of them: it recomputes the MAC,
so any token file holder can issue one (``pymapreduce dashboard-url --client NAME``),
nobody else can forge one, and replacing ``http.token`` revokes them all.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os

from zmq.utils import z85

from ..errors import ConfigError

PREFIX = "client."
MAC_HEX = 32  # hex digits of the MAC kept (128 bits)


def _mac(master: str, key: bytes) -> str:
    return hmac.new(master.encode(), b"pymapreduce-http-client:" + key,
                    hashlib.sha256).hexdigest()[:MAC_HEX]


def client_token(master: str, public_z85: str) -> str:
    """The token for the client whose CURVE public key is ``public_z85`` (z85 text)."""
    key = z85.decode(public_z85.encode())
    return f"{PREFIX}{key.hex()}.{_mac(master, key)}"


def scope_of(master: str, given: str) -> str | None:
    """The tenant a client token shows (``key <z85>``, as the broker names the owner of a
    job), or None if ``given`` is not a client token of this broker."""
    if not given.startswith(PREFIX) or len(given) != len(PREFIX) + 64 + 1 + MAC_HEX:
        return None
    key_hex, _, mac = given[len(PREFIX):].partition(".")
    try:
        key = binascii.unhexlify(key_hex)
    except (binascii.Error, ValueError):
        return None
    if len(key) != 32 or not hmac.compare_digest(mac.encode(), _mac(master, key).encode()):
        return None
    return "key " + z85.encode(key).decode()


def client_public_key(name: str, keys_dir: str | None) -> str:
    """The public key (z85 text) of a client: a ``.key`` file, or NAME in the key
    directory (``DIR/NAME.key``, else ``DIR/clients/NAME.key``)."""
    import zmq.auth

    candidates = [name]
    if keys_dir:
        candidates += [os.path.join(keys_dir, f"{name}.key"),
                       os.path.join(keys_dir, "clients", f"{name}.key")]
    for path in candidates:
        if os.path.isfile(path):
            try:
                public, _ = zmq.auth.load_certificate(path)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read key file {path}: {exc}") from None
            return public.decode()
    raise ConfigError(f"no client key {name!r}: give a .key file, or the name of one in "
                      f"{keys_dir or 'the key directory (--keys)'} or its clients/")
