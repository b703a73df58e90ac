"""Fixtures: a real example server (node dist/examples/server.js) per test, JWTs signed here,
a TCP proxy that can cut one client off the network, and desktop clients with their windows."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import pytest

# One Qt binding for qtpy and pytest-qt alike: the first of pytest-qt's order that is installed.
if not os.environ.get('QT_API'):
    import importlib.util
    for _api, _module in (('pyside6', 'PySide6'), ('pyside2', 'PySide2'), ('pyqt6', 'PyQt6'), ('pyqt5', 'PyQt5')):
        if importlib.util.find_spec(_module) is not None:
            os.environ['QT_API'] = _api
            break
os.environ.setdefault('PYTEST_QT_API', os.environ.get('QT_API', ''))
os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, '..', '..', '..'))
sys.path.insert(0, os.path.join(HERE, '..'))
SERVER_JS = os.path.join(REPO, 'dist', 'examples', 'server.js')
SECRET = 'desktop-tests-' + uuid.uuid4().hex
ARTIFACTS = os.path.join(HERE, 'artifacts')


def sign(sub: str, teams: list[str], lifetime_s: int = 3600) -> str:
    """An HS256 JWT the example server accepts (sub, teams, iat, exp)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b'=').decode()
    now = int(time.time())
    head = b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())
    body = b64(json.dumps({'sub': sub, 'teams': teams, 'iat': now, 'exp': now + lifetime_s}).encode())
    mac = hmac.new(SECRET.encode(), f'{head}.{body}'.encode(), hashlib.sha256).digest()
    return f'{head}.{body}.{b64(mac)}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Server:
    """The example server on a fixed port and database, to be killed and started again."""

    def __init__(self, tmp: str) -> None:
        self.port = free_port()
        self.database = os.path.join(tmp, 'atlas.db')
        self.base_url = f'http://127.0.0.1:{self.port}'
        self.proc: subprocess.Popen | None = None
        self.log = os.path.join(tmp, 'server.log')

    def start(self) -> None:
        if not os.path.exists(SERVER_JS):
            pytest.fail(f'{SERVER_JS} is missing: build first (npx tsc -p tsconfig.build.json && npx tsc -p client/tsconfig.json)')
        env = {**os.environ, 'PORT': str(self.port), 'HOST': '127.0.0.1', 'DATABASE_PATH': self.database,
               'JWT_SECRET': SECRET, 'LOG': 'off'}
        env.pop('REDIS_URL', None)
        log = open(self.log, 'ab')
        self.proc = subprocess.Popen(['node', SERVER_JS], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log)
        # Ready when it prints its address (after listen()).
        deadline = time.monotonic() + 30
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f'the server exited with {self.proc.wait()}; see {self.log}: {open(self.log).read()[-2000:]}')
            if b'Atlas Realtime example on' in line:
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()   # drain
                return
        raise RuntimeError('the server did not start within 30 s')

    def kill(self) -> None:
        """SIGKILL: no close frames, no graceful anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def http(self, method: str, path: str, token: str, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        h = {'Authorization': f'Bearer {token}', **(headers or {})}
        if data is not None:
            h['Content-Type'] = 'application/json'
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                raw = res.read()
                return res.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, json.loads(raw) if raw else None

    def tasks(self, team: str, token: str) -> tuple[list, int]:
        status, body = self.http('GET', f'/teams/{team}/tasks?limit=1000', token)
        assert status == 200, body
        return body['tasks'], body['seq']

    def events(self, team: str, token: str) -> list:
        """The team's whole event log, as a resume from seq 0 replays it."""
        import websocket
        ws = websocket.create_connection(f'ws://127.0.0.1:{self.port}/realtime?teams={team}&since={team}:0',
                                         header=[f'Authorization: Bearer {token}'], subprotocols=['atlas.v1'], timeout=10)
        events = []
        try:
            while True:
                msg = json.loads(ws.recv())
                if msg['type'].startswith('task.'):
                    events.append(msg)
                elif msg['type'] in ('subscribed', 'resync'):
                    assert msg['type'] == 'subscribed', msg
                    return events
        finally:
            ws.close()


class Proxy:
    """A TCP proxy in front of the server for one client: `online = False` cuts every open
    connection and refuses new ones (a laptop on a train); `drop_next_response(prefix)` lets
    the next request starting with `prefix` reach the server and then cuts the connection
    before its answer comes back (the commit happened, the client never heard)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.base_url = f'http://127.0.0.1:{self.port}'
        self.online = True
        self._drop_prefix: bytes | None = None
        self.dropped = 0
        self._conns: set = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def set_online(self, online: bool) -> None:
        self.online = online
        if not online:
            with self._lock:
                conns = list(self._conns)
            for s in conns:
                _hard_close(s)

    def drop_next_response(self, prefix: bytes) -> None:
        self._drop_prefix = prefix

    def close(self) -> None:
        self._closed = True
        self.set_online(False)
        self.listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.online:
                _hard_close(client)
                continue
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(('127.0.0.1', self.server.port), timeout=5)
        except OSError:
            _hard_close(client)
            return
        upstream.settimeout(None)
        with self._lock:
            self._conns.update((client, upstream))
        drop = False
        first = True
        try:
            while True:
                readable, _, _ = select.select([client, upstream], [], [], 1.0)
                if not self.online:
                    break
                if client in readable:
                    data = client.recv(65536)
                    if not data:
                        break
                    if first and self._drop_prefix is not None and data.startswith(self._drop_prefix):
                        self._drop_prefix = None
                        drop = True
                    first = False
                    upstream.sendall(data)
                if upstream in readable:
                    data = upstream.recv(65536)
                    if not data:
                        break
                    if drop:
                        # The server answered (so it committed): the client never hears it.
                        self.dropped += 1
                        break
                    client.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.difference_update((client, upstream))
            _hard_close(client)
            _hard_close(upstream)


def _hard_close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


@pytest.fixture
def server(tmp_path):
    srv = Server(str(tmp_path))
    srv.start()
    yield srv
    srv.kill()


@pytest.fixture
def proxies(server):
    made: list[Proxy] = []

    def make() -> Proxy:
        p = Proxy(server)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


@pytest.fixture
def desktop(qtbot, tmp_path):
    """desktop(user, base_url, state_name=None) -> a started BoardWindow; closed at the end."""
    from atlas_desktop.api import Api
    from atlas_desktop.client import SyncClient
    from atlas_desktop.realtime import Backoff
    from atlas_desktop.ui import BoardWindow
    windows = []

    def make(user: str, base_url: str, team: str = 'red', state: str | None = None, start: bool = True):
        client = SyncClient(Api(base_url, sign(user, [team]), timeout=3), team,
                            str(tmp_path / (state or f'{user}.json')), user=user,
                            reconnect=Backoff(0.1, 1.0), retry=Backoff(0.1, 1.0))
        window = BoardWindow(client)
        qtbot.addWidget(window)
        window.show()
        if start:
            client.start()
        windows.append(window)
        return window
    yield make
    for w in windows:
        w.close()   # stops the worker, saves the state


def wait_live(qtbot, *windows, timeout=15000):
    qtbot.waitUntil(lambda: all(w.client.state == 'live' for w in windows), timeout=timeout)
