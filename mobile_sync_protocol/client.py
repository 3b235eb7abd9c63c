"""Reference tablet client: a local SQLite store (queue, synced records, cursor) and httpx.

Duties it shows (PROTOCOL.md §7): every local change is queued with the next `seq` in the same
local transaction; push sends the queue in order and marks answered mutations, so a client killed
between push and acknowledgement simply pushes again and gets `duplicate` answers; each pull page
and its cursor are applied in one local transaction; a reset drops synced records, never the queue;
a rejection never deletes a local record — it is kept, marked, for the user to see.

The store holds the township's personal numbers, so everything in it but ids and sequence state is
sealed (AES-256-GCM, each value bound to its place) under the tablet's store key, which the server
gives the device's own token while the device is active (`SyncClient.unlock`) and which lives in
memory only: a revoked tablet's store cannot be opened with the app (PROTOCOL.md §5).
"""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mobile_sync_protocol import codec, query_codes
from mobile_sync_protocol import messages as m

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY, mutation_id TEXT NOT NULL, type TEXT NOT NULL, body BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', answer BLOB
);
CREATE TABLE IF NOT EXISTS records (entity TEXT NOT NULL, id TEXT NOT NULL, data BLOB NOT NULL,
                                    PRIMARY KEY (entity, id));
"""
FINAL = frozenset({"applied", "applied_with_conflict", "rejected", "quarantined", "duplicate"})
NONCE_BYTES = 12
KEY_CHECK = b"canbao tablet store"  # sealed under the key on first unlock: a wrong key is told apart


class StoreLocked(Exception):
    """The local store is sealed and its key is not held: unlock it (online, `SyncClient.unlock`)."""


class WrongStoreKey(StoreLocked):
    """The key does not open this store (another device's, or the store was made under another)."""


class SyncFailed(Exception):
    """The server refused the whole request (HTTP status and problem code)."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code


class AnswerUnreadable(SyncFailed):
    """The answer arrived damaged (cut short): the tablet treats it as lost."""


def _problem_code(response: httpx.Response) -> str:
    try:
        body = msgspec.json.decode(response.content) if response.content else {}
    except msgspec.DecodeError:
        return "unknown"
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else "unknown"


class TabletStore:
    def __init__(self, path: str | Path, key: bytes | None = None) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.executescript(_SCHEMA)
        self._aead: AESGCM | None = None
        if key is not None:
            self.unlock(key)

    # The store key ------------------------------------------------------------------------------

    @property
    def locked(self) -> bool:
        return self._aead is None

    def unlock(self, key: bytes) -> None:
        """Opens the store with its key. The first key a store meets becomes its key (a store made
        before sealing has its rows sealed then); another key afterwards is `WrongStoreKey`."""
        aead = AESGCM(key)
        check = self.get("key_check")
        if check is not None:
            try:
                self._decrypt(aead, base64.b64decode(check), "meta:key_check")
            except InvalidTag:
                raise WrongStoreKey("this key does not open this store") from None
            self._aead = aead
            return
        self._aead = aead
        with self.transaction() as db:
            for seq, body, answer in db.execute("SELECT seq, body, answer FROM queue").fetchall():
                sealed_answer = None if answer is None else self.seal(answer, f"answer:{seq}")
                db.execute(
                    "UPDATE queue SET body = ?, answer = ? WHERE seq = ?",
                    (self.seal(body, f"queue:{seq}"), sealed_answer, seq),
                )
            for entity, id_, data in db.execute("SELECT entity, id, data FROM records").fetchall():
                db.execute(
                    "UPDATE records SET data = ? WHERE entity = ? AND id = ?",
                    (self.seal(data, f"record:{entity}:{id_}"), entity, id_),
                )
            self.put(db, "key_check", base64.b64encode(self.seal(KEY_CHECK, "meta:key_check")).decode())

    def lock(self) -> None:
        """Forgets the key: when the server refuses it, when the user logs out or leaves the app."""
        self._aead = None

    def seal(self, data: bytes, where: str) -> bytes:
        """`data` sealed for one place of the store (`where`: a sealed value moved elsewhere does not open)."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._key().encrypt(nonce, data, where.encode())

    def open(self, sealed: bytes, where: str) -> bytes:
        return self._decrypt(self._key(), sealed, where)

    def _key(self) -> AESGCM:
        if self._aead is None:
            raise StoreLocked("the tablet's store is locked: unlock it with the key the server gives (online)")
        return self._aead

    @staticmethod
    def _decrypt(aead: AESGCM, sealed: bytes, where: str) -> bytes:
        return aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], where.encode())

    def get_secret(self, key: str) -> bytes | None:
        stored = self.get(key)
        return None if stored is None else self.open(base64.b64decode(stored), f"meta:{key}")

    def put_secret(self, db: sqlite3.Connection, key: str, value: bytes) -> None:
        self.put(db, key, base64.b64encode(self.seal(value, f"meta:{key}")).decode())

    # Reading ----------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def put(self, db: sqlite3.Connection, key: str, value: str | None) -> None:
        db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value)
        )

    def records(self, entity: str) -> dict[UUID, dict[str, Any]]:
        rows = self.db.execute("SELECT id, data FROM records WHERE entity = ?", (entity,)).fetchall()
        return {UUID(r[0]): msgspec.json.decode(self.open(r[1], f"record:{entity}:{r[0]}")) for r in rows}

    def live_enrolments(self, year: int) -> dict[UUID, dict[str, Any]]:
        """Each person's live (not cancelled) enrolment of `year` in the synced copy, by person id:
        an enrolment is the person's, shown in whatever household they are in now, never looked up
        by the household it names (PROTOCOL.md, "A person's enrolment")."""
        return {
            UUID(r["person_id"]): r
            for r in self.records("enrollment").values()
            if r["coverage_year"] == year and r["status"] != "cancelled"
        }

    def _answer(self, seq: int, sealed: bytes | None) -> m.Answer | None:
        return None if sealed is None else msgspec.json.decode(self.open(sealed, f"answer:{seq}"), type=m.Answer)

    def queue(self, state: str | None = None) -> list[tuple[int, str, m.Answer | None]]:
        rows = self.db.execute(
            "SELECT seq, state, answer FROM queue WHERE ? IS NULL OR state = ? ORDER BY seq", (state, state)
        ).fetchall()
        return [(r[0], r[1], self._answer(r[0], r[2])) for r in rows]

    def mutation(self, seq: int, sealed: bytes) -> m.AnyMutation:
        return msgspec.json.decode(self.open(sealed, f"queue:{seq}"), type=m.AnyMutation)

    def entries(self) -> list[QueueEntry]:
        """Every queued mutation with its state and final answer, in seq order (answered ones too)."""
        rows = self.db.execute("SELECT seq, body, state, answer FROM queue ORDER BY seq").fetchall()
        return [
            QueueEntry(seq=r[0], mutation=self.mutation(r[0], r[1]), state=r[2], answer=self._answer(r[0], r[3]))
            for r in rows
        ]


class QueueEntry(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    mutation: m.AnyMutation
    state: str  # pending, or the final answer's status (a duplicate's first)
    answer: m.Answer | None


class SyncClient:
    def __init__(
        self, http: httpx.AsyncClient, store: TabletStore, device_id: UUID, token: str, fmt: codec.Format = "msgpack"
    ) -> None:
        self.http, self.store, self.device_id, self.token, self.fmt = http, store, device_id, token, fmt

    async def unlock(self) -> None:
        """Asks the server for this tablet's store key (its own token, the device active) and opens
        the store with it; the key stays in memory only. A suspended or revoked tablet is refused
        (`SyncFailed` 401): its store stays sealed."""
        request = m.StoreKeyRequest(protocol_version=m.PROTOCOL_VERSION, device_id=self.device_id)
        try:
            answer: m.StoreKeyResponse = await self._post("/api/v1/sync/store-key", request, m.StoreKeyResponse)
        except SyncFailed as exc:
            if exc.status == 401:
                self.store.lock()  # refused: a key held from before is not kept a moment longer
            raise
        self.store.unlock(answer.store_key)

    def enqueue(self, mutation: m.AnyMutation) -> m.AnyMutation:
        """Queues a mutation under the next seq (the one given is replaced), in one local transaction."""
        with self.store.transaction() as db:
            seq = int(self.store.get("next_seq") or 1)
            queued = msgspec.structs.replace(mutation, seq=seq)
            tag = queued.__struct_config__.tag
            db.execute(
                "INSERT INTO queue (seq, mutation_id, type, body) VALUES (?, ?, ?, ?)",
                (seq, str(queued.mutation_id), tag, self.store.seal(msgspec.json.encode(queued), f"queue:{seq}")),
            )
            self.store.put(db, "next_seq", str(seq + 1))
        return queued

    async def send(self, path: str, payload: Any) -> Any:
        """Posts any payload (a message or plain JSON values) in the client's format and returns the
        answer as plain values: how the golden vectors are replayed (`replay.py`)."""
        return await self._post(path, payload, Any)

    def query_code_key(self) -> bytes | None:
        """The key the server issued this tablet for query-code hashes (PROTOCOL.md §3, query codes)."""
        return self.store.get_secret("query_code_key")

    def keep_query_code_key(self, key: bytes | str) -> None:
        raw = key if isinstance(key, bytes) else base64.b64decode(key)
        with self.store.transaction() as db:
            self.store.put_secret(db, "query_code_key", raw)

    def query_code_hash(self, household_id: UUID, coverage_year: int, code: str) -> bytes:
        key = self.query_code_key()
        if key is None:
            raise LookupError("no query-code key yet: pull once after registration")
        return query_codes.query_code_hash(key, household_id, coverage_year, code)

    def new_query_code(self, household_id: UUID, coverage_year: int) -> tuple[str, bytes]:
        """A fresh query code, made offline, and the keyed hash that `enrollment.create` carries.
        The code itself stays on the tablet (printed on the slip); only the hash is pushed."""
        code = query_codes.new_query_code()
        return code, self.query_code_hash(household_id, coverage_year, code)

    async def _post(self, path: str, payload: Any, answer: Any) -> Any:
        response = await self.http.post(
            path,
            content=codec.encode(payload, self.fmt),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": codec.media_type(self.fmt)},
        )
        if response.status_code != 200:
            raise SyncFailed(response.status_code, _problem_code(response))
        try:
            return codec.decode(response.content, answer, self.fmt)
        except msgspec.DecodeError as exc:
            # An answer cut short on the way is an answer lost: nothing is marked, the queue is
            # pushed again and the server replays what it already applied.
            raise AnswerUnreadable(response.status_code, "unreadable_answer") from exc

    async def push(self, batch: int = 500) -> m.PushResponse | None:
        """Sends the oldest pending mutations (the store unlocked first, online, if need be)."""
        if self.store.locked:
            await self.unlock()
        rows = self.store.db.execute(
            "SELECT seq, body FROM queue WHERE state = 'pending' ORDER BY seq LIMIT ?", (batch,)
        ).fetchall()
        if not rows:
            return None
        mutations = [self.store.mutation(r[0], r[1]) for r in rows]
        raws = [msgspec.Raw(codec.encode(x, self.fmt)) for x in mutations]
        request = m.PushRequest(
            protocol_version=m.PROTOCOL_VERSION, device_id=self.device_id, mutations=raws, device_time=datetime.now(UTC)
        )
        response: m.PushResponse = await self._post("/api/v1/sync/push", request, m.PushResponse)
        with self.store.transaction() as db:
            for answer in response.answers:
                if answer.seq is not None and answer.status in FINAL:
                    final = answer.first if answer.status == "duplicate" and answer.first is not None else answer
                    state = final.status if final.status != "duplicate" else "applied"
                    db.execute(
                        "UPDATE queue SET state = ?, answer = ? WHERE seq = ?",
                        (state, self.store.seal(msgspec.json.encode(final), f"answer:{answer.seq}"), answer.seq),
                    )
        return response

    async def pull(self, limit: int = 1000) -> int:
        """Pulls every page (the store unlocked first if need be); returns how many changes were applied."""
        if self.store.locked:
            await self.unlock()
        applied = 0
        while True:
            request = m.PullRequest(
                protocol_version=m.PROTOCOL_VERSION,
                device_id=self.device_id,
                cursor=self.store.get("cursor"),
                page_token=self.store.get("page_token"),
                limit=limit,
            )
            page: m.PullResponse = await self._post("/api/v1/sync/pull", request, m.PullResponse)
            if page.query_code_key is not None and page.query_code_key != self.query_code_key():
                self.keep_query_code_key(page.query_code_key)
            with self.store.transaction() as db:
                if page.reset:
                    db.execute("DELETE FROM records")  # the synced copy only: the queue stays
                for change in page.changes:
                    if isinstance(change, m.Upsert):
                        tag, row_id = change.row.__struct_config__.tag, str(change.row.id)
                        data = self.store.seal(msgspec.json.encode(change.row), f"record:{tag}:{row_id}")
                        db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", (tag, row_id, data))
                    else:
                        db.execute("DELETE FROM records WHERE entity = ? AND id = ?", (change.entity, str(change.id)))
                self.store.put(db, "page_token", page.page_token)
                if page.cursor is not None:
                    self.store.put(db, "cursor", page.cursor)
            applied += len(page.changes)
            if not page.has_more:
                return applied

    async def sync(self) -> None:
        """Push first (until the queue is answered), then pull."""
        while True:
            before = len(self.store.queue("pending"))
            if await self.push() is None or len(self.store.queue("pending")) in (0, before):
                break  # answered, or no progress (a gap the server reports): pull anyway
        await self.pull()
