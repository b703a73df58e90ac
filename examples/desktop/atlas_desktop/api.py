"""The HTTP task routes of docs/protocol.md ("HTTP task API"), with urllib only.

Every call returns a Response for any HTTP answer (2xx or not) and raises NetworkError when no
answer came (refused, reset, timeout): the caller must then assume the server may or may not
have applied a mutation, and retry it with the same Idempotency-Key.
"""

from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Optional

TIMEOUT_S = 10.0


class NetworkError(Exception):
    """No HTTP answer: the request may or may not have reached the server."""


@dataclass
class Response:
    status: int
    body: Any
    headers: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def code(self) -> str:
        return self.body.get('code', '') if isinstance(self.body, dict) else ''

    @property
    def message(self) -> str:
        return self.body.get('message', '') if isinstance(self.body, dict) else ''

    @property
    def replayed(self) -> bool:
        return self.headers.get('idempotency-replayed') == 'true'


class Api:
    def __init__(self, base_url: str, token: str, timeout: float = TIMEOUT_S,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self.base_url = base_url.rstrip('/')
        self.token = token
        self.timeout = timeout
        self.ssl_context = ssl_context

    def request(self, method: str, path: str, body: Any = None, headers: Optional[dict] = None) -> Response:
        data = None
        all_headers = {'Authorization': f'Bearer {self.token}', 'Accept': 'application/json'}
        if body is not None:
            data = json.dumps(body).encode('utf-8')
            all_headers['Content-Type'] = 'application/json'
        all_headers.update(headers or {})
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl_context) as res:
                return _response(res.status, res.headers, res.read())
        except urllib.error.HTTPError as err:
            # An answer, even if an error one: the server decided.
            try:
                raw = err.read()
            except (OSError, socket.timeout):
                raw = b''
            return _response(err.code, err.headers, raw)
        except (urllib.error.URLError, OSError, socket.timeout, ConnectionError) as err:
            raise NetworkError(f'{method} {path}: {getattr(err, "reason", err)}') from err

    # The task routes. `key` is the Idempotency-Key, `if_match` the version the change is based on.

    def list_tasks(self, team: str) -> tuple[list, int]:
        """Every page of the team's list; the seq is the FIRST page's (protocol: resync procedure)."""
        tasks: list = []
        first_seq: Optional[int] = None
        cursor: Optional[str] = None
        while True:
            query = '' if cursor is None else '?cursor=' + urllib.parse.quote(cursor, safe='')
            res = self.request('GET', f'/teams/{_q(team)}/tasks{query}')
            if not res.ok:
                raise ApiError(res)
            tasks.extend(res.body['tasks'])
            if first_seq is None:
                first_seq = int(res.body['seq'])
            cursor = res.body.get('nextCursor')
            if cursor is None:
                return tasks, first_seq

    def create(self, team: str, body: dict, key: str) -> Response:
        return self.request('POST', f'/teams/{_q(team)}/tasks', body, {'Idempotency-Key': key})

    def update(self, team: str, task_id: str, body: dict, key: str, if_match: Optional[int]) -> Response:
        return self.request('PATCH', f'/teams/{_q(team)}/tasks/{_q(task_id)}', body, _mutation_headers(key, if_match))

    def delete(self, team: str, task_id: str, key: str, if_match: Optional[int]) -> Response:
        return self.request('DELETE', f'/teams/{_q(team)}/tasks/{_q(task_id)}', None, _mutation_headers(key, if_match))


class ApiError(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(f'{response.status} {response.code}: {response.message}')
        self.response = response


def fetch_demo_token(base_url: str, user: str, timeout: float = TIMEOUT_S,
                     ssl_context: Optional[ssl.SSLContext] = None) -> str:
    """The token of a demo user from the example server's GET /demo/tokens (servers started
    without JWT_SECRET offer it; development only)."""
    url = base_url.rstrip('/') + '/demo/tokens'
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ssl_context) as res:
            users = json.loads(res.read())['users']
    except urllib.error.HTTPError as err:
        raise SystemExit(f'{url} answered {err.code}: this server offers no demo tokens '
                         '(it was started with JWT_SECRET); pass --token instead') from err
    except (urllib.error.URLError, OSError) as err:
        raise SystemExit(f'cannot reach {url}: {getattr(err, "reason", err)}') from err
    for entry in users:
        if entry['userId'] == user:
            return entry['token']
    raise SystemExit(f'{url} has no user {user!r} (it has {", ".join(u["userId"] for u in users)})')


def _mutation_headers(key: str, if_match: Optional[int]) -> dict:
    headers = {'Idempotency-Key': key}
    if if_match is not None:
        headers['If-Match'] = f'"{if_match}"'
    return headers


def _response(status: int, headers: Any, raw: bytes) -> Response:
    body: Any = None
    if raw:
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode('utf-8', 'replace')
    return Response(status, body, {k.lower(): v for k, v in (headers.items() if headers else [])})


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe='')
