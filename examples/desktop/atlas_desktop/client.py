"""The board's logic without widgets: the store, the offline queue, the realtime worker and the
sender of queued mutations, wired together on the UI thread.

Sending: one request at a time, the queue's head first (entries go out in the order they were
made), each in a short-lived thread so the window never waits on the network. What an answer
does to the entry:

- 2xx (including a replay, `Idempotency-Replayed: true`): done; the answer's task goes into the
  confirmed state and gives the next edit of the same task its If-Match.
- no answer (refused, reset, timeout), 408, 429, 5xx: kept, and sent again with the SAME key
  after a full-jitter backoff (429's Retry-After at least), or at once when the socket is back.
  Nothing is rolled back: the edit stays on the board, marked pending.
- 412, 404, 403 and other refusals: a conflict. The entry stays (blocking the ones after it, so
  the order holds) until the user chose in the conflict dialog; nothing is dropped silently.
- 401: sending stops until the app is restarted with a fresh token; the queue is kept.
"""

from __future__ import annotations

import random
import threading
from typing import Optional

from qtpy.QtCore import QObject, QTimer, Signal

from .api import Api, NetworkError, Response
from .queue import LOCAL_PREFIX, Entry, OfflineQueue, StateFile
from .realtime import LIVE, OFFLINE, STOPPED, Backoff, RealtimeWorker
from .store import GapError, Store

EDITABLE = ('title', 'description', 'status', 'assignee', 'dueDate')


class _Relay(QObject):
    """Carries an answer from a sender thread to the UI thread (a queued signal)."""
    answered = Signal(str, object)


class SyncClient(QObject):
    changed = Signal()                # the board must be redrawn
    connection = Signal(str, str)     # realtime state and its detail
    conflict = Signal(object)         # an Entry whose `conflict` the user must resolve
    notice = Signal(str)              # a line for the activity log

    def __init__(self, api: Api, team: str, state_path: str, user: str = '',
                 reconnect: Optional[Backoff] = None, retry: Optional[Backoff] = None,
                 ssl_context=None) -> None:
        super().__init__()
        self.api = api
        self.team = team
        self.user = user
        self.state_file = StateFile(state_path)
        doc = self.state_file.load()
        if doc is not None and doc.get('team') == team and doc.get('baseUrl') == api.base_url:
            self.store = Store.from_json(doc['store'])
            self.queue = OfflineQueue.from_json(doc.get('queue', []))
        else:
            if doc is not None and doc.get('queue'):
                raise SystemExit(f'{self.state_file.path} holds {len(doc["queue"])} unsent edits for team '
                                 f'{doc.get("team")} at {doc.get("baseUrl")}: open it with those, or use another --state-file')
            self.store = Store(team)
            self.queue = OfflineQueue()
        self.state = STOPPED
        self.state_detail = ''
        self.unauthorized = False
        self.retry = retry or Backoff(0.5, 30.0)
        self._sending: Optional[Entry] = None
        self._retry_timer = QTimer(self)
        self._retry_timer.setSingleShot(True)
        self._retry_timer.timeout.connect(self._kick)
        self._save_timer = QTimer(self)   # events are saved in batches; queue changes at once
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(250)
        self._save_timer.timeout.connect(self.save)
        self._relay = _Relay()
        self._relay.answered.connect(self._on_answer)
        self.worker = RealtimeWorker(api, team, self.store.since, reconnect, ssl_context=ssl_context)
        self.worker.state.connect(self._on_state)
        self.worker.event.connect(self._on_event)
        self.worker.snapshot.connect(self._on_snapshot)
        self.worker.notice.connect(self.notice)
        self.sent_log: list[tuple[str, int, bool]] = []   # (key, status, replayed) of every answer

    # Life cycle

    def start(self) -> None:
        self.worker.start()
        self._kick()

    def stop(self) -> None:
        self.worker.stop()
        self._retry_timer.stop()
        self.save()

    def save(self) -> None:
        self._save_timer.stop()
        self.state_file.save({'baseUrl': self.api.base_url, 'user': self.user, 'team': self.team,
                              'store': self.store.to_json(), 'queue': self.queue.to_json()})

    # What the window shows

    def view(self) -> dict:
        return self.store.view(self.queue)

    def conflicts(self) -> list:
        return [e for e in self.queue if e.conflict is not None]

    # Edits: each applies at once (the view) and is queued durably before anything is sent.

    def create(self, fields: dict) -> Entry:
        body = {k: v for k, v in fields.items() if k in EDITABLE}
        return self._enqueue(Entry.new('create', self.team, None, body, None))

    def update(self, task_id: str, fields: dict) -> Optional[Entry]:
        shown = self.view().get(task_id)
        if shown is None:
            return None
        body = {k: v for k, v in fields.items() if k in EDITABLE and shown.get(k) != v}
        if not body:
            return None
        return self._enqueue(Entry.new('update', self.team, task_id, body, self._version_of(task_id), _clean(shown)))

    def move(self, task_id: str, status: str) -> Optional[Entry]:
        return self.update(task_id, {'status': status})

    def delete(self, task_id: str) -> Optional[Entry]:
        shown = self.view().get(task_id)
        if shown is None:
            return None
        return self._enqueue(Entry.new('delete', self.team, task_id, None, self._version_of(task_id), _clean(shown)))

    def _version_of(self, task_id: str) -> Optional[int]:
        task = self.store.tasks.get(task_id)
        return int(task['version']) if task is not None else None

    def _enqueue(self, entry: Entry) -> Entry:
        self.queue.append(entry)
        self.save()   # durable before it is sent: a crash or a restart keeps it, key and all
        self.changed.emit()
        self._kick()
        return entry

    # Conflicts

    def resolve(self, entry: Entry, choice: str) -> None:
        """`choice`: 'mine' (412: send again over their version; 404: create it again with my
        version; 403 and others: try again) or 'theirs' (drop my edit, and my later edits of
        that task, which were built on it)."""
        if entry not in self.queue.entries or entry.conflict is None:
            return
        conflict = entry.conflict
        if choice == 'theirs':
            dropped = self.queue.drop(entry)
            self.notice.emit(f'Discarded {len(dropped)} edit(s) of "{_title(entry)}": kept the server\'s version.')
        elif conflict['status'] == 412:
            entry.if_match = int(conflict['theirs']['version'])
            entry.conflict = None
            self.notice.emit(f'Keeping your edit of "{_title(entry)}" over version {entry.if_match}.')
        elif conflict['status'] == 404 and entry.op == 'update':
            # The task is gone: mine comes back as a new task (a new mutation, so a new key).
            fields = {k: v for k, v in {**(entry.base or {}), **(entry.body or {})}.items() if k in EDITABLE}
            replacement = Entry.new('create', self.team, None, fields, None)
            for other in self.queue.pending_for(entry.task_id):
                if other is not entry:
                    other.task_id = replacement.task_id
            self.queue.entries[self.queue.entries.index(entry)] = replacement
            self.notice.emit(f'Re-creating "{_title(entry)}" with your version.')
        else:
            entry.conflict = None
            self.notice.emit(f'Trying "{_title(entry)}" again.')
        self.save()
        self.changed.emit()
        self._kick()

    # Sending

    def _kick(self) -> None:
        if self._sending is not None or self.unauthorized or self._retry_timer.isActive():
            return
        entry = self.queue.head()
        if entry is None or entry.conflict is not None:
            return
        if entry.chained:
            # Its predecessor is gone (answered before a restart of an older version): base it
            # on the version the confirmed state holds.
            entry.chained = False
            entry.if_match = self._version_of(entry.task_id)
        if entry.task_id.startswith(LOCAL_PREFIX) and entry.op != 'create':
            # The task it edits was never created (its creation was discarded): nothing to edit.
            self.queue.drop(entry)
            self.save()
            self.changed.emit()
            self._kick()
            return
        entry.attempts += 1
        self._sending = entry
        threading.Thread(target=self._send, args=(entry,), name='atlas-send', daemon=True).start()

    def _send(self, entry: Entry) -> None:
        """In a sender thread: one HTTP request, its outcome relayed to the UI thread."""
        try:
            if entry.op == 'create':
                outcome: object = self.api.create(entry.team, entry.body or {}, entry.key)
            elif entry.op == 'update':
                outcome = self.api.update(entry.team, entry.task_id, entry.body or {}, entry.key, entry.if_match)
            else:
                outcome = self.api.delete(entry.team, entry.task_id, entry.key, entry.if_match)
        except NetworkError as err:
            outcome = err
        self._relay.answered.emit(entry.key, outcome)

    def _on_answer(self, key: str, outcome: object) -> None:
        entry = self._sending
        self._sending = None
        if entry is None or entry.key != key or entry not in self.queue.entries:
            self._kick()
            return
        if isinstance(outcome, NetworkError):
            entry.last_error = str(outcome)
            self._later(entry, f'no answer ({outcome})')
            return
        res: Response = outcome  # type: ignore[assignment]
        self.sent_log.append((entry.key, res.status, res.replayed))
        if res.ok:
            task = res.body if isinstance(res.body, dict) and 'id' in res.body else None
            self.store.answer(entry, task)
            self.queue.succeeded(entry, task)
            self.retry.reset()
            if res.replayed:
                self.notice.emit(f'"{_title(entry)}" had already reached the server: not applied twice.')
        elif res.status in (408, 429) or res.status >= 500:
            entry.last_error = f'{res.status} {res.code}'
            self._later(entry, f'{res.status} {res.code}', _retry_after(res))
            return
        elif res.status == 401:
            entry.last_error = f'401 {res.code}'
            self.unauthorized = True
            self.notice.emit('The server refused the token (401): edits are kept and will be sent after a restart with a fresh token.')
        elif res.status == 404 and entry.op == 'delete':
            # Already gone: what the delete wanted. Said, not hidden.
            self.store.answer(entry, None)
            self.queue.succeeded(entry, None)
            self.notice.emit(f'"{_title(entry)}" had already been deleted by someone else.')
        else:
            theirs = res.body.get('task') if isinstance(res.body, dict) else None
            if res.status == 412 and theirs is not None:
                self.store.learn(theirs)
            if res.status == 404:
                self.store.gone(entry.task_id)
            entry.conflict = {'status': res.status, 'code': res.code, 'message': res.message, 'theirs': theirs}
            self.notice.emit(f'Conflict on "{_title(entry)}": {res.status} {res.code}.')
            self.save()
            self.changed.emit()
            self.conflict.emit(entry)
            return
        self.save()
        self.changed.emit()
        self._kick()

    def _later(self, entry: Entry, why: str, at_least: float = 0.0) -> None:
        delay = max(at_least, self.retry.next())
        self.notice.emit(f'"{_title(entry)}" not sent ({why}); trying again in {delay:.1f} s with the same key.')
        self.save()
        self.changed.emit()
        self._retry_timer.start(int(delay * 1000))

    # Realtime

    def _on_state(self, state: str, detail: str) -> None:
        if state == OFFLINE and self.state != OFFLINE:
            self.notice.emit(f'Offline: {detail}. Edits are kept and sent when the server is back.')
        elif state == LIVE and self.state != LIVE:
            self.notice.emit(f'Live ({detail}).')
        self.state, self.state_detail = state, detail
        self.connection.emit(state, detail)
        if state == LIVE:
            # The server is reachable again: what waits goes now, not at the end of a backoff.
            self.retry.reset()
            if self._retry_timer.isActive():
                self._retry_timer.stop()
            self._kick()

    def _on_event(self, event: dict) -> None:
        try:
            applied = self.store.apply(event)
        except GapError as err:
            self.notice.emit(f'{err}: reloading.')
            self.store.forget()
            self.worker.reconnect_now()
            return
        if applied:
            self._save_timer.start()
            self.changed.emit()

    def _on_snapshot(self, tasks: list, seq: int) -> None:
        self.store.snapshot(tasks, seq)
        self.save()
        self.changed.emit()


def _clean(task: dict) -> dict:
    return {k: v for k, v in task.items() if not k.startswith('_')}


def _title(entry: Entry) -> str:
    return str((entry.body or {}).get('title') or (entry.base or {}).get('title') or entry.task_id)


def _retry_after(res: Response) -> float:
    try:
        return float(res.headers.get('retry-after', 0))
    except ValueError:
        return 0.0
