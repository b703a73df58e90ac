"""Confirmed state of one team and the pending layer over it.

`confirmed` is what the server said: the task list as of `last` (a seq of the team's event log),
moved forward by events, each applied exactly once (protocol: "Applying an event"). The pending
layer is the offline queue's entries applied over it, in order: what the user sees. An answer to
a mutation also lands in `confirmed` (the task it answers with), but never makes a task older
than what it holds: versions only go up, so the highest one seen is the newest.
"""

from __future__ import annotations

import copy
import threading
from typing import Iterable, Optional

from .queue import Entry

STATUSES = ('todo', 'in_progress', 'done')
DEFAULTS = {'description': '', 'status': 'todo', 'assignee': None, 'dueDate': None}


class GapError(Exception):
    """An event's seq is above last + 1: something was missed; refetch."""


class Store:
    def __init__(self, team: str) -> None:
        self.team = team
        self.tasks: dict[str, dict] = {}
        self.last: Optional[int] = None     # None: never loaded
        # Task ids known deleted (with the version they died at): a late event or answer about
        # them must not bring them back. Ids are UUIDs, never reused.
        self.tombstones: dict[str, int] = {}
        self.applied_seqs: list[int] = []   # every seq applied, for the tests and the log
        self.snapshots = 0                  # how many lists replaced the state
        self._lock = threading.Lock()       # `last` is read by the realtime thread

    # Read by the realtime worker when it builds the `since` of a (re)connection.
    def since(self) -> Optional[int]:
        with self._lock:
            return self.last

    def forget(self) -> None:
        """Throw the seq away (a gap, or state from another database): the next connection loads."""
        with self._lock:
            self.last = None

    def snapshot(self, tasks: Iterable[dict], seq: int) -> None:
        """Resync: the team's list as of `seq` replaces everything held."""
        fresh = {t['id']: t for t in tasks if t['id'] not in self.tombstones}
        with self._lock:
            self.tasks = fresh
            self.last = seq
        self.snapshots += 1

    def apply(self, event: dict) -> bool:
        """One event frame; False when it was already applied (seq <= last)."""
        seq = int(event['seq'])
        with self._lock:
            if self.last is None or seq <= self.last:
                return False
            if seq > self.last + 1:
                raise GapError(f'team {self.team}: event {seq} after {self.last}')
            kind = event['type']
            task_id = event['taskId']
            if kind in ('task.created', 'task.updated'):
                self._merge(event['task'])
            elif kind == 'task.deleted':
                self._bury(task_id, int(event.get('version', 0)))
            self.last = seq
        self.applied_seqs.append(seq)
        return True

    def answer(self, entry: Entry, task: Optional[dict]) -> None:
        """The server's answer to a mutation of ours (before or after its event)."""
        with self._lock:
            if entry.op == 'delete':
                self._bury(entry.task_id, int(entry.if_match or 0))
            elif task is not None:
                self._merge(task)

    def learn(self, task: dict) -> None:
        """A task the server answered with (a 412's current task)."""
        with self._lock:
            self._merge(task)

    def gone(self, task_id: str) -> None:
        """The server said the task does not exist (404)."""
        with self._lock:
            self._bury(task_id, 0)

    def _merge(self, task: dict) -> None:
        if task['id'] in self.tombstones:
            return
        held = self.tasks.get(task['id'])
        if held is None or int(task['version']) >= int(held['version']):
            self.tasks[task['id']] = task

    def _bury(self, task_id: str, version: int) -> None:
        self.tasks.pop(task_id, None)
        self.tombstones[task_id] = version

    def view(self, entries: Iterable[Entry]) -> dict[str, dict]:
        """Confirmed tasks with the queued edits applied in order; pending ones are marked
        `_pending` (and `_conflict` while the user has not resolved one)."""
        tasks = copy.deepcopy(self.tasks)
        for e in entries:
            if e.team != self.team:
                continue
            if e.op == 'create':
                tasks[e.task_id] = {**DEFAULTS, **(e.body or {}), 'id': e.task_id, 'teamId': e.team,
                                    'version': 0, '_pending': True}
            elif e.op == 'update' and e.task_id in tasks:
                tasks[e.task_id].update(e.body or {})
                tasks[e.task_id]['_pending'] = True
            elif e.op == 'update' and e.conflict is not None and e.base is not None:
                # Deleted meanwhile (404): the user's version stays visible until they choose.
                tasks[e.task_id] = {**e.base, **(e.body or {}), '_pending': True}
            elif e.op == 'delete':
                tasks.pop(e.task_id, None)
            if e.conflict is not None and e.task_id in tasks:
                tasks[e.task_id]['_conflict'] = True
        return tasks

    def to_json(self) -> dict:
        with self._lock:
            return {'team': self.team, 'last': self.last, 'tasks': list(self.tasks.values()),
                    'tombstones': self.tombstones}

    @staticmethod
    def from_json(data: dict) -> 'Store':
        store = Store(data['team'])
        store.tasks = {t['id']: t for t in data.get('tasks', [])}
        store.last = data.get('last')
        store.tombstones = dict(data.get('tombstones', {}))
        return store
