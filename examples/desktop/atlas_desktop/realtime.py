"""The realtime connection in a worker thread (websocket-client), handing frames to the UI
thread through Qt signals.

It follows docs/protocol.md's "Client algorithm": the credential in `Authorization: Bearer` on
the upgrade with subprotocol `atlas.v1`; `since=T:last` whenever the store knows its `last`, so a
reconnection resumes exactly where the previous one stopped; a fresh list (every page, the first
page's seq) after `subscribed` when there was no `since`, and after any `resync`. The list is
read here, in this thread, before the next frame is read: the socket itself then buffers the
events that follow, and the UI gets the snapshot and those events in order through the queued
signals. On any close: full-jitter exponential backoff, then reconnect, except after 4001/4003
(the credential or the team was refused: retrying would be refused again).

Heartbeats: websocket-client answers the server's protocol pings; a socket on which nothing at
all (frame or ping) arrived for 2 x heartbeatMs + 5 s is taken for dead and replaced.
"""

from __future__ import annotations

import json
import random
import ssl
import threading
import time
import urllib.parse
from typing import Callable, Optional

import websocket
from qtpy.QtCore import QObject, Signal

from .api import Api, ApiError, NetworkError

# Connected states, as the window shows them.
CONNECTING, LOADING, LIVE, OFFLINE, STOPPED = 'connecting', 'loading', 'live', 'offline', 'stopped'


class Backoff:
    """Full jitter: a random delay in [0, min(cap, base x 2^attempt)]."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0

    def next(self) -> float:
        delay = random.uniform(0, min(self.cap_s, self.base_s * 2 ** self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return delay

    def reset(self) -> None:
        self.attempt = 0


class RealtimeWorker(QObject):
    state = Signal(str, str)         # one of the states above, and a detail for the window
    event = Signal(object)           # a task.* frame (dict)
    snapshot = Signal(object, int)   # the team's tasks (list) and the seq they are current as of
    welcome = Signal(object)         # the welcome frame
    notice = Signal(str)             # something the user should read (error frames, close codes)

    STABLE_S = 10.0   # a connection that stayed up this long resets the backoff

    def __init__(self, api: Api, team: str, since: Callable[[], Optional[int]],
                 backoff: Optional[Backoff] = None, ws_url: Optional[str] = None,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        super().__init__()
        self.api = api
        self.team = team
        self.since = since
        self.backoff = backoff or Backoff()
        self.ws_url = ws_url or _ws_url(api.base_url)
        self.ssl_context = ssl_context
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._ws: Optional[websocket.WebSocket] = None
        self._thread: Optional[threading.Thread] = None
        self.connections = 0   # how many sockets got their welcome (tests, log)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f'atlas-realtime-{self.team}', daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._drop_socket()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def reconnect_now(self) -> None:
        """Replace the socket at once (after a gap the store cannot fill)."""
        self.backoff.reset()
        self._wake.set()
        self._drop_socket()

    def _drop_socket(self) -> None:
        ws = self._ws
        if ws is not None:
            try:
                ws.abort()
            except Exception:
                pass

    def _run(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            outcome = self._connect_once()
            if self._stopping.is_set():
                break
            if outcome in ('unauthorized', 'forbidden'):
                self.state.emit(STOPPED, outcome)
                return
            if time.monotonic() - started >= self.STABLE_S:
                self.backoff.reset()
            delay = self.backoff.next()
            self.state.emit(OFFLINE, f'{outcome}; reconnecting in {delay:.1f} s')
            self._wake.clear()
            self._wake.wait(delay)
        self.state.emit(STOPPED, 'closed')

    def _connect_once(self) -> str:
        """One connection, from the upgrade to its end; returns why it ended."""
        since = self.since()
        query = {'teams': self.team}
        if since is not None:
            query['since'] = f'{self.team}:{since}'
        url = self.ws_url + '?' + urllib.parse.urlencode(query, safe=':,')
        plan = f'resuming from seq {since}' if since is not None else 'first load'
        if self.backoff.attempt == 0:
            self.state.emit(CONNECTING, plan)
        else:
            # Still offline until a socket is up: the window does not flicker at every attempt.
            self.state.emit(OFFLINE, f'reconnecting ({plan}, attempt {self.backoff.attempt + 1})')
        sslopt = {'context': self.ssl_context} if self.ssl_context is not None else None
        try:
            ws = websocket.create_connection(
                url, timeout=10, header=[f'Authorization: Bearer {self.api.token}'],
                subprotocols=['atlas.v1'], enable_multithread=True, sslopt=sslopt)
        except websocket.WebSocketBadStatusException as err:
            status = getattr(err, 'status_code', 0)
            if status == 401:
                return 'unauthorized'
            return f'upgrade refused ({status})'
        except (OSError, websocket.WebSocketException) as err:
            return f'cannot connect: {err}'
        self._ws = ws
        if self._stopping.is_set():
            self._drop_socket()
            return 'stopped'
        try:
            return self._read(ws, since)
        finally:
            self._ws = None
            try:
                ws.close(timeout=0.5)
            except Exception:
                pass

    def _read(self, ws: websocket.WebSocket, since: Optional[int]) -> str:
        heartbeat_s = 30.0
        ws.settimeout(2 * heartbeat_s + 5)
        while True:
            try:
                opcode, frame = ws.recv_data_frame(True)
            except websocket.WebSocketTimeoutException:
                return 'no heartbeat from the server'
            except (OSError, websocket.WebSocketException) as err:
                return f'connection lost ({err or type(err).__name__})'
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code, reason = _close_code(frame.data)
                if code == 4001:
                    self.notice.emit(f'The server refused the credential ({reason}). Restart with a fresh token.')
                    return 'unauthorized'
                if code == 4003:
                    self.notice.emit(f'Not a member of team {self.team} ({reason}).')
                    return 'forbidden'
                return f'closed by the server ({code} {reason})'.strip()
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue   # pings are answered by websocket-client; pongs and binary mean nothing here
            try:
                msg = json.loads(frame.data)
            except ValueError:
                continue
            kind = msg.get('type')
            if kind == 'welcome':
                heartbeat_s = msg.get('heartbeatMs', 30000) / 1000
                ws.settimeout(2 * heartbeat_s + 5)
                self.connections += 1
                self.welcome.emit(msg)
            elif kind == 'subscribed' and msg.get('teamId') == self.team:
                if since is None and not self._load():
                    return 'could not load the task list'
                self.state.emit(LIVE, f'seq {msg.get("seq")}, {msg.get("replayed", 0)} replayed')
            elif kind == 'resync' and msg.get('teamId') == self.team:
                self.notice.emit(f'Resync ({msg.get("reason")}): reloading the list.')
                if not self._load():
                    return 'could not load the task list'
                self.state.emit(LIVE, f'reloaded ({msg.get("reason")})')
            elif kind in ('task.created', 'task.updated', 'task.deleted'):
                self.event.emit(msg)
            elif kind == 'unsubscribed' and msg.get('teamId') == self.team and msg.get('reason'):
                self.notice.emit(f'Access to team {self.team} was revoked.')
                return 'forbidden'
            elif kind == 'error':
                self.notice.emit(f'Server error frame {msg.get("code")}: {msg.get("message")}')

    def _load(self) -> bool:
        self.state.emit(LOADING, 'reading the task list')
        try:
            tasks, seq = self.api.list_tasks(self.team)
        except NetworkError as err:
            self.notice.emit(f'Loading the list failed: {err}')
            return False
        except ApiError as err:
            self.notice.emit(f'Loading the list was refused: {err}')
            return False
        self.snapshot.emit(tasks, seq)
        return True


def _ws_url(base_url: str) -> str:
    parts = urllib.parse.urlsplit(base_url)
    scheme = 'wss' if parts.scheme == 'https' else 'ws'
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path.rstrip('/') + '/realtime', '', ''))


def _close_code(data: bytes) -> tuple[int, str]:
    if len(data) >= 2:
        return int.from_bytes(data[:2], 'big'), data[2:].decode('utf-8', 'replace')
    return 1005, ''
