"""Personal numbers at rest: sealed with an authenticated cipher, found by a keyed blind index.

Every stored identity number, birth-certificate number and phone number is two columns: `…_enc`,
the value sealed under a data key, and `…_hash`, an HMAC of the normalised value under the index
key, which look-ups, joins and unique indexes use. A constraint violation or a plan can then only
ever show a hash. Names stay in clear (staff search by name).

Two suites: `aes` (AES-256-GCM, HMAC-SHA256; the default) and `sm` (SM4-GCM, HMAC-SM3, for
deployments whose cryptography evaluation asks for the national algorithms), both through the
`cryptography` package and OpenSSL. A sealed value is

    version (1 byte, 1) | key id (2 bytes, big-endian) | nonce (12 bytes) | ciphertext | tag (16 bytes)

with the value's kind (`id_number`, `birth_cert`, `phone`, or a blob's purpose) as associated
data, so a value cannot be moved to a column of another kind unnoticed. Keys live in a key file
(JSON, mode 0600) outside the database: `CANBAO_KEY_FILE`, or in embedded mode `keys.json` in
the data folder, made on first start. The database keeps only each key's fingerprint
(`crypto_keys`), so a server holding other keys refuses to start instead of writing a second,
unreadable kind of row. `canbao keys rotate` adds a data key and re-seals the rows under it; the
index key never changes (a new one would mean re-hashing every row at once).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backend.config import Settings, SettingsError
from backend.db import Connection
from mobile_sync_protocol.rules import identity

Suite = Literal["aes", "sm"]
SUITES: tuple[Suite, ...] = ("aes", "sm")
KEY_FILE = "keys.json"
FORMAT = 1
HEADER = struct.Struct(">BH")
NONCE_BYTES = 12
TAG_BYTES = 16
DATA_KEY_BYTES: dict[Suite, int] = {"aes": 32, "sm": 16}
INDEX_KEY_BYTES = 32
_SHA256_BLOCK = 64  # HMAC pads (or hashes) its key to the hash's block
FINGERPRINT_LABEL = b"canbao key fingerprint v1"

# The kinds of sealed values; the blind index of a kind is comparable across tables (lists and
# persons join on `id_number_hash`).
ID_NUMBER = "id_number"
BIRTH_CERT = "birth_cert"
PHONE = "phone"


class CryptoError(Exception):
    """A key file or a sealed value that this process cannot use (message for the operator)."""


@dataclass
class Keyring:
    suite: Suite
    index_key: bytes
    data_keys: dict[int, bytes]
    current: int
    _aead: dict[int, AESGCM] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise CryptoError(f"unknown suite {self.suite!r} (aes or sm)")
        if len(self.index_key) < INDEX_KEY_BYTES:
            raise CryptoError("the index key is shorter than 32 bytes")
        for key_id, key in self.data_keys.items():
            if not 1 <= key_id <= 0xFFFF or len(key) != DATA_KEY_BYTES[self.suite]:
                raise CryptoError(f"data key {key_id} is not a {DATA_KEY_BYTES[self.suite] * 8}-bit {self.suite} key")
        if self.current not in self.data_keys:
            raise CryptoError(f"the current data key {self.current} is not in the key file")
        if self.suite == "aes":
            self._aead = {key_id: AESGCM(key) for key_id, key in self.data_keys.items()}

    # -- the blind index ------------------------------------------------------------------------

    def index(self, kind: str, value: str | None) -> bytes | None:
        """The keyed hash of a normalised value (upper case, no surrounding blanks)."""
        if value is None:
            return None
        message = kind.encode() + b"\x00" + value.strip().upper().encode()
        if self.suite == "aes":
            return hmac.digest(self.index_key, message, hashlib.sha256)
        mac = crypto_hmac.HMAC(self.index_key, hashes.SM3())
        mac.update(message)
        return mac.finalize()

    # -- sealing --------------------------------------------------------------------------------

    def seal(self, kind: str, value: str | None) -> bytes | None:
        return None if value is None else self.seal_bytes(kind, value.encode())

    def open(self, kind: str, sealed: bytes | None) -> str | None:
        return None if sealed is None else self.open_bytes(kind, sealed).decode()

    def seal_bytes(self, kind: str, data: bytes) -> bytes:
        key_id = self.current
        nonce = os.urandom(NONCE_BYTES)
        header = HEADER.pack(FORMAT, key_id)
        return header + nonce + self._encrypt(key_id, nonce, data, kind.encode())

    def open_bytes(self, kind: str, sealed: bytes) -> bytes:
        key_id = self.key_id_of(sealed)
        if key_id not in self.data_keys:
            raise CryptoError(f"a value is sealed under data key {key_id}, which is not in the key file")
        start = HEADER.size
        nonce = sealed[start : start + NONCE_BYTES]
        try:
            return self._decrypt(key_id, nonce, sealed[start + NONCE_BYTES :], kind.encode())
        except InvalidTag:
            raise CryptoError(f"a {kind} value does not authenticate under data key {key_id}") from None

    @staticmethod
    def key_id_of(sealed: bytes) -> int:
        if len(sealed) < HEADER.size + NONCE_BYTES + TAG_BYTES:
            raise CryptoError("a sealed value is too short")
        version, key_id = HEADER.unpack_from(sealed)
        if version != FORMAT:
            raise CryptoError(f"a sealed value has format {version}, not {FORMAT}")
        return int(key_id)

    def _encrypt(self, key_id: int, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        if self.suite == "aes":
            return self._aead[key_id].encrypt(nonce, data, aad)
        encryptor = Cipher(algorithms.SM4(self.data_keys[key_id]), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(aad)
        return encryptor.update(data) + encryptor.finalize() + encryptor.tag

    def _decrypt(self, key_id: int, nonce: bytes, body: bytes, aad: bytes) -> bytes:
        if self.suite == "aes":
            return self._aead[key_id].decrypt(nonce, body, aad)
        ciphertext, tag = body[:-TAG_BYTES], body[-TAG_BYTES:]
        decryptor = Cipher(algorithms.SM4(self.data_keys[key_id]), modes.GCM(nonce, tag)).decryptor()
        decryptor.authenticate_additional_data(aad)
        return decryptor.update(ciphertext) + decryptor.finalize()

    # -- many values at once (a list import: a million rows) --------------------------------------

    def index_many(self, kind: str, values: Sequence[str]) -> list[bytes]:
        """`index` of each value, at a third of the cost: the HMAC keyed with the index key and fed
        the kind is made once (RFC 2104's inner and outer states), and each value costs copies."""
        prefix = kind.encode() + b"\x00"
        out: list[bytes] = []
        if self.suite == "aes":
            key = self.index_key if len(self.index_key) <= _SHA256_BLOCK else hashlib.sha256(self.index_key).digest()
            key = key.ljust(_SHA256_BLOCK, b"\x00")
            inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + prefix)
            outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
            for value in values:
                i = inner.copy()
                i.update(value.strip().upper().encode())
                o = outer.copy()
                o.update(i.digest())
                out.append(o.digest())
            return out
        keyed = crypto_hmac.HMAC(self.index_key, hashes.SM3())
        keyed.update(prefix)
        for value in values:
            mac = keyed.copy()
            mac.update(value.strip().upper().encode())
            out.append(mac.finalize())
        return out

    def seal_many(self, kind: str, values: Sequence[str]) -> list[bytes]:
        """`seal` of each value under the current data key, at half the cost: the header and the
        associated data made once, the nonces drawn in one read of the system's random source."""
        key_id = self.current
        header = HEADER.pack(FORMAT, key_id)
        aad = kind.encode()
        nonces = os.urandom(NONCE_BYTES * len(values))
        out: list[bytes] = []
        if self.suite == "aes":
            encrypt = self._aead[key_id].encrypt
            for at, value in enumerate(values):
                nonce = nonces[at * NONCE_BYTES : (at + 1) * NONCE_BYTES]
                out.append(header + nonce + encrypt(nonce, value.encode(), aad))
            return out
        for at, value in enumerate(values):
            nonce = nonces[at * NONCE_BYTES : (at + 1) * NONCE_BYTES]
            out.append(header + nonce + self._encrypt(key_id, nonce, value.encode(), aad))
        return out

    # -- what the database may know -------------------------------------------------------------

    def fingerprints(self) -> list[tuple[str, int, str, bytes]]:
        """(role, key id, suite, fingerprint) of every key: a MAC of a constant, never the key."""
        rows: list[tuple[str, int, str, bytes]] = [("index", 0, self.suite, _fingerprint(self.index_key))]
        rows += [("data", key_id, self.suite, _fingerprint(key)) for key_id, key in sorted(self.data_keys.items())]
        return rows

    # -- the key file ---------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 1,
                "suite": self.suite,
                "index_key": self.index_key.hex(),
                "data_keys": {str(key_id): key.hex() for key_id, key in sorted(self.data_keys.items())},
                "current": self.current,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Keyring:
        try:
            raw = json.loads(text)
            return cls(
                suite=raw["suite"],
                index_key=bytes.fromhex(raw["index_key"]),
                data_keys={int(key_id): bytes.fromhex(key) for key_id, key in raw["data_keys"].items()},
                current=int(raw["current"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CryptoError(f"not a Canbao key file ({exc.__class__.__name__}: {exc})") from None

    @classmethod
    def generate(cls, suite: Suite = "aes") -> Keyring:
        return cls(
            suite=suite,
            index_key=secrets.token_bytes(INDEX_KEY_BYTES),
            data_keys={1: secrets.token_bytes(DATA_KEY_BYTES[suite])},
            current=1,
        )

    def with_new_data_key(self) -> Keyring:
        """The same keys plus a new current data key (`canbao keys rotate`)."""
        key_id = max(self.data_keys) + 1
        keys = dict(self.data_keys)
        keys[key_id] = secrets.token_bytes(DATA_KEY_BYTES[self.suite])
        return Keyring(suite=self.suite, index_key=self.index_key, data_keys=keys, current=key_id)


def _fingerprint(key: bytes) -> bytes:
    return hmac.digest(key, FINGERPRINT_LABEL, hashlib.sha256)[:16]


def mask(number: str | None) -> str | None:
    """`110105********002X`: the protocol's hint for humans (mobile_sync_protocol.rules.identity),
    for lists where the full number is not needed."""
    return None if number is None else identity.mask(number)


def read_key_file(path: Path) -> Keyring:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CryptoError(f"cannot read the key file {path}: {exc.strerror}") from None
    return Keyring.from_json(text)


def write_key_file(path: Path, keyring: Keyring, *, replace: bool = False) -> None:
    """Writes the key file with mode 0600; `replace` swaps it atomically (rename over the old)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not replace:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(keyring.to_json())
        return
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(keyring.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


# The process's keys: installed once at start-up (the app factory, CLI commands, job workers), read
# by the services that store or show personal numbers.
_installed: list[Keyring] = []


def install(keyring: Keyring) -> None:
    _installed[:] = [keyring]


def keys() -> Keyring:
    if not _installed:
        raise RuntimeError("no keys installed: call backend.crypto.install() at start-up")
    return _installed[0]


def index_all(kind: str, values: Iterable[str]) -> list[bytes]:
    keyring = keys()
    return [keyring.index(kind, value) or b"" for value in values]


def key_path(settings: Settings) -> Path:
    """Where the keys are: CANBAO_KEY_FILE, or `keys.json` in the data folder (embedded mode)."""
    if settings.key_file is not None:
        return Path(settings.key_file).expanduser().resolve()
    if settings.embedded:
        return (Path(settings.data_dir).expanduser() / KEY_FILE).resolve()
    raise SettingsError(
        "CANBAO_KEY_FILE", "required with DATABASE_URL: every instance must seal identity numbers with the same keys"
    )


def load_keyring(settings: Settings) -> Keyring:
    """The keys from CANBAO_KEY_FILE; in embedded mode, a key file made once in the data folder."""
    path = key_path(settings)
    if settings.key_file is None and not path.exists():
        with contextlib.suppress(FileExistsError):  # another process made it first
            write_key_file(path, Keyring.generate(settings.crypto_suite))
    try:
        keyring = read_key_file(path)
    except CryptoError as exc:
        raise SettingsError("CANBAO_KEY_FILE", str(exc)) from None
    if path.stat().st_mode & 0o077:
        raise SettingsError("CANBAO_KEY_FILE", f"{path} must be readable by its owner only (chmod 600)")
    if keyring.suite != settings.crypto_suite:
        raise SettingsError(
            "CANBAO_CRYPTO_SUITE", f"is {settings.crypto_suite} but the key file {path} holds {keyring.suite} keys"
        )
    return keyring


async def check_database(conn: Connection, keyring: Keyring) -> None:
    """Refuses a database sealed under keys this process does not hold; registers new keys.

    The database keeps each key's fingerprint (`crypto_keys`). A missing data key or another
    index key would make rows unreadable or unfindable, so start-up stops with the key ids.
    """
    if not await conn.fetchval("SELECT to_regclass('crypto_keys') IS NOT NULL"):
        return  # a schema from before sealing: `canbao migrate` seals it with these keys
    known = {(row["role"], row["key_id"]): row for row in await conn.fetch(CHECK_SQL)}
    for role, key_id, suite, fingerprint in keyring.fingerprints():
        row = known.pop((role, key_id), None)
        if row is None:
            await conn.execute(REGISTER_SQL, role, key_id, suite, fingerprint)
        elif row["suite"] != suite or row["fingerprint"] != fingerprint:
            name = "index key" if role == "index" else f"data key {key_id}"
            raise CryptoError(
                f"the database was sealed with another {name} ({row['suite']}) than the key file holds: "
                "start with the key file the database was made with (CANBAO_KEY_FILE)"
            )
    missing = sorted(key_id for role, key_id in known if role == "data")
    if missing:
        raise CryptoError(
            f"the database holds values sealed under data keys {missing}, which the key file lacks: "
            "restore the key file from its backup (keys are never in the database)"
        )


CHECK_SQL = "SELECT role, key_id, suite, fingerprint FROM crypto_keys"
REGISTER_SQL = """
INSERT INTO crypto_keys (role, key_id, suite, fingerprint) VALUES ($1, $2, $3, $4)
ON CONFLICT (role, key_id) DO NOTHING
"""
