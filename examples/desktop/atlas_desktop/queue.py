"""The offline queue of mutations and the state file it lives in.

Every edit becomes an Entry at once, with the Idempotency-Key it keeps for good: retries after a
network failure, after a restart of the app, after the server came back, all carry that key, so
a request that reached the server before the connection dropped is not applied twice (the
server answers the replay with the original result). Entries are sent in the order they were
made. A network failure never removes an entry; only an answer does (success, or a conflict the
user resolved).

The state file holds the queue together with the confirmed state (store.py), as one JSON
document written atomically (a temporary file, fsync, rename): a crash leaves either the old or
the new file, never half of one, and the queue and the state it applies to always match.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Optional

STATE_FORMAT = 1
LOCAL_PREFIX = 'local-'


@dataclass
class Entry:
    key: str                  # the Idempotency-Key, fixed when the edit was made
    op: str                   # 'create' | 'update' | 'delete'
    team: str
    task_id: str              # a server id, or LOCAL_PREFIX + key for a task created offline
    body: Optional[dict]      # the JSON body, never changed after the first attempt
    if_match: Optional[int]   # the version the edit is based on; None while chained
    chained: bool = False     # waits for the previous entry of the same task to give its version
    base: Optional[dict] = None   # the task as the user saw it when editing (for the conflict dialog)
    made_at: float = field(default_factory=time.time)
    attempts: int = 0
    last_error: str = ''
    conflict: Optional[dict] = None   # {'status', 'code', 'message', 'theirs'} while unresolved

    @staticmethod
    def new(op: str, team: str, task_id: Optional[str], body: Optional[dict], if_match: Optional[int],
            base: Optional[dict] = None) -> 'Entry':
        key = str(uuid.uuid4())
        return Entry(key=key, op=op, team=team, task_id=task_id or LOCAL_PREFIX + key, body=body,
                     if_match=if_match, base=base)


class OfflineQueue:
    """Entries in the order they were made. Not thread-safe: the UI thread owns it."""

    def __init__(self, entries: Optional[list] = None) -> None:
        self.entries: list[Entry] = list(entries or [])

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def head(self) -> Optional[Entry]:
        return self.entries[0] if self.entries else None

    def pending_for(self, task_id: str) -> list[Entry]:
        return [e for e in self.entries if e.task_id == task_id]

    def append(self, entry: Entry) -> Entry:
        # An edit of a task that already has edits waiting is based on the outcome of the last
        # one: its If-Match is that entry's resulting version, known only once it is answered.
        if entry.op != 'create' and self.pending_for(entry.task_id):
            entry.chained = True
            entry.if_match = None
        self.entries.append(entry)
        return entry

    def succeeded(self, entry: Entry, task: Optional[dict]) -> None:
        """The server applied `entry` (or replayed it); `task` is the task it answered with."""
        self.entries.remove(entry)
        following = self.pending_for(entry.task_id)
        if entry.op == 'create' and task is not None:
            # The task now has its server id: later edits of it go there.
            for other in following:
                other.task_id = task['id']
        if following and following[0].chained:
            following[0].chained = False
            following[0].if_match = task['version'] if task is not None else None

    def drop(self, entry: Entry) -> list[Entry]:
        """Remove `entry` and every later edit of the same task (they were built on it)."""
        dropped = [entry] + [e for e in self.pending_for(entry.task_id) if e is not entry and self.entries.index(e) > self.entries.index(entry)]
        for e in dropped:
            self.entries.remove(e)
        return dropped

    def to_json(self) -> list:
        return [asdict(e) for e in self.entries]

    @staticmethod
    def from_json(data: list) -> 'OfflineQueue':
        return OfflineQueue([Entry(**item) for item in data])


class StateFile:
    """One JSON document: {"format": 1, "baseUrl", "user", "store": {...}, "queue": [...]}."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def load(self) -> Optional[dict]:
        try:
            with open(self.path, encoding='utf-8') as f:
                doc = json.load(f)
        except FileNotFoundError:
            return None
        if not isinstance(doc, dict) or doc.get('format') != STATE_FORMAT:
            raise ValueError(f'{self.path} is not an Atlas desktop state file (format {STATE_FORMAT})')
        return doc

    def save(self, doc: dict) -> None:
        doc = {'format': STATE_FORMAT, **doc}
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.atlas-state-', suffix='.tmp', dir=directory)
        try:
            with os.fdopen(fd, 'w', encoding='utf-8') as f:
                json.dump(doc, f, separators=(',', ':'))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        # The rename itself is durable only once the directory is.
        try:
            dfd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)


def to_jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))
