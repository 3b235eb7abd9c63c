"""Reference tablet client: a local SQLite store (queue, synced records, cursor) and httpx.

Duties it shows (PROTOCOL.md §7): every local change is queued with the next `seq` in the same
local transaction; push sends the queue in order and marks answered mutations, so a client killed
between push and acknowledgement simply pushes again and gets `duplicate` answers; each pull page
and its cursor are applied in one local transaction; a reset drops synced records, never the queue;
a rejection never deletes a local record — it is kept, marked, for the user to see.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import msgspec

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
    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.executescript(_SCHEMA)

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
        return {UUID(r[0]): msgspec.json.decode(r[1]) for r in rows}

    def queue(self, state: str | None = None) -> list[tuple[int, str, m.Answer | None]]:
        rows = self.db.execute(
            "SELECT seq, state, answer FROM queue WHERE ? IS NULL OR state = ? ORDER BY seq", (state, state)
        ).fetchall()
        return [(r[0], r[1], None if r[2] is None else msgspec.json.decode(r[2], type=m.Answer)) for r in rows]

    def entries(self) -> list[QueueEntry]:
        """Every queued mutation with its state and final answer, in seq order (answered ones too)."""
        rows = self.db.execute("SELECT seq, body, state, answer FROM queue ORDER BY seq").fetchall()
        return [
            QueueEntry(
                seq=r[0],
                mutation=msgspec.json.decode(r[1], type=m.AnyMutation),
                state=r[2],
                answer=None if r[3] is None else msgspec.json.decode(r[3], type=m.Answer),
            )
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

    def enqueue(self, mutation: m.AnyMutation) -> m.AnyMutation:
        """Queues a mutation under the next seq (the one given is replaced), in one local transaction."""
        with self.store.transaction() as db:
            seq = int(self.store.get("next_seq") or 1)
            queued = msgspec.structs.replace(mutation, seq=seq)
            tag = queued.__struct_config__.tag
            db.execute(
                "INSERT INTO queue (seq, mutation_id, type, body) VALUES (?, ?, ?, ?)",
                (seq, str(queued.mutation_id), tag, msgspec.json.encode(queued)),
            )
            self.store.put(db, "next_seq", str(seq + 1))
        return queued

    async def send(self, path: str, payload: Any) -> Any:
        """Posts any payload (a message or plain JSON values) in the client's format and returns the
        answer as plain values: how the golden vectors are replayed (`replay.py`)."""
        return await self._post(path, payload, Any)

    def query_code_key(self) -> bytes | None:
        """The key the server issued this tablet for query-code hashes (PROTOCOL.md §3, query codes)."""
        stored = self.store.get("query_code_key")
        return None if stored is None else bytes.fromhex(stored)

    def keep_query_code_key(self, key: bytes | str) -> None:
        raw = key if isinstance(key, bytes) else base64.b64decode(key)
        with self.store.transaction() as db:
            self.store.put(db, "query_code_key", raw.hex())

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
        rows = self.store.db.execute(
            "SELECT seq, body FROM queue WHERE state = 'pending' ORDER BY seq LIMIT ?", (batch,)
        ).fetchall()
        if not rows:
            return None
        mutations = [msgspec.json.decode(r[1], type=m.AnyMutation) for r in rows]
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
                        (state, msgspec.json.encode(final), answer.seq),
                    )
        return response

    async def pull(self, limit: int = 1000) -> int:
        """Pulls every page; returns how many changes were applied."""
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
                        tag = change.row.__struct_config__.tag
                        db.execute(
                            "INSERT OR REPLACE INTO records VALUES (?, ?, ?)",
                            (tag, str(change.row.id), msgspec.json.encode(change.row)),
                        )
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
