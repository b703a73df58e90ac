#!/usr/bin/env python3
"""A minimal Atlas Realtime client (protocol version 1), standard library only.

Built from docs/protocol.md alone: a small RFC 6455 WebSocket client over `socket`, and on
top of it the protocol's client algorithm (load, stay current, resume, resync).

    python3 atlas_client.py --url https://127.0.0.1:3000 --token TOKEN [--teams red] \
        [--cafile ca.pem] [--max-events N] [--timeout S] [--json]

The token travels in the `Authorization: Bearer` header, on the upgrade as on HTTP calls, never
in a URL. `--cafile` trusts a private CA for https:// and wss:// (default: the system's CAs).

Applied events go to stdout (one JSON line each with --json); diagnostics go to stderr.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import socket
import ssl
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def log(msg: str) -> None:
    print(f'[atlas] {msg}', file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- WebSocket layer

SUBPROTOCOL = 'atlas.v1'


class UpgradeRefused(Exception):
    """The server answered the upgrade with a plain HTTP response (401, 400, 403, ...)."""

    def __init__(self, status: int, body: str):
        super().__init__(f'upgrade refused: {status} {body}')
        self.status, self.body = status, body


class ConnectionClosed(Exception):
    """The connection ended: `code` is the close code (1006 when there was no close frame)."""

    def __init__(self, code: int, reason: str = ''):
        super().__init__(f'closed {code} {reason}'.strip())
        self.code, self.reason = code, reason


class WebSocket:
    """`protocols`: subprotocols offered (Sec-WebSocket-Protocol); the server must pick one of them
    or none (`self.protocol`). `context`: the TLS trust for wss:// (default: the system's CAs)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = 10.0,
                 protocols: list[str] | None = None, context: ssl.SSLContext | None = None):
        u = urllib.parse.urlsplit(url)
        secure = u.scheme == 'wss'
        port = u.port or (443 if secure else 80)
        sock = socket.create_connection((u.hostname, port), timeout=timeout)
        if secure:
            # Verifies the chain and that the certificate names u.hostname (its subjectAltName).
            try:
                sock = (context or ssl.create_default_context()).wrap_socket(sock, server_hostname=u.hostname)
            except BaseException:
                sock.close()
                raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf, self.closed, self.protocol = sock, b'', False, None
        key = base64.b64encode(os.urandom(16)).decode()
        target = (u.path or '/') + (f'?{u.query}' if u.query else '')
        lines = [f'GET {target} HTTP/1.1', f'Host: {u.netloc.rpartition("@")[2]}', 'Upgrade: websocket',
                 'Connection: Upgrade', f'Sec-WebSocket-Key: {key}', 'Sec-WebSocket-Version: 13']
        if protocols:
            lines.append(f'Sec-WebSocket-Protocol: {", ".join(protocols)}')
        lines += [f'{k}: {v}' for k, v in (headers or {}).items()]
        sock.sendall(('\r\n'.join(lines) + '\r\n\r\n').encode())
        while b'\r\n\r\n' not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b'\r\n\r\n', 1)
        status_line, *header_lines = head.decode('latin-1').split('\r\n')
        status = int(status_line.split()[1])
        hdrs = {k.strip().lower(): v.strip() for k, v in (h.split(':', 1) for h in header_lines if ':' in h)}
        if status != 101:
            length = int(hdrs.get('content-length', '0'))
            try:
                while len(self.buf) < length:
                    self._fill()
            except ConnectionClosed:
                pass
            sock.close()
            raise UpgradeRefused(status, self.buf[:length].decode('utf-8', 'replace'))
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if hdrs.get('sec-websocket-accept') != expected:
            sock.close()
            raise ConnectionClosed(1002, 'bad Sec-WebSocket-Accept')
        self.protocol = hdrs.get('sec-websocket-protocol')
        if self.protocol is not None and self.protocol not in (protocols or []):
            sock.close()          # RFC 6455 4.1: a subprotocol we did not offer fails the connection
            raise ConnectionClosed(1002, f'server selected subprotocol {self.protocol!r}')

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionClosed(1006, 'connection dropped')
        self.buf += chunk

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, opcode: int, payload: bytes = b'') -> None:
        """Sends one final frame, masked as RFC 6455 requires of clients."""
        n = len(payload)
        header = bytes([0x80 | opcode])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack('!H', n)
        else:
            header += bytes([0x80 | 127]) + struct.pack('!Q', n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_text(self, text: str) -> None:
        self.send(OP_TEXT, text.encode())

    def recv_text(self, timeout: float) -> str:
        """Next text message; answers pings, assembles fragments. socket.timeout if idle."""
        self.sock.settimeout(timeout)
        message, message_op = b'', None
        while True:
            b0, b1 = self._read(2)
            fin, opcode, masked, n = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
            if n == 126:
                n = struct.unpack('!H', self._read(2))[0]
            elif n == 127:
                n = struct.unpack('!Q', self._read(8))[0]
            mask = self._read(4) if masked else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == OP_PING:
                self.send(OP_PONG, payload)
            elif opcode == OP_PONG:
                pass
            elif opcode == OP_CLOSE:
                code = struct.unpack('!H', payload[:2])[0] if len(payload) >= 2 else 1005
                reason = payload[2:].decode('utf-8', 'replace')
                self.close(code if code != 1005 else 1000)
                raise ConnectionClosed(code, reason)
            else:
                if opcode != OP_CONT:
                    message_op = opcode
                message += payload
                if fin:
                    if message_op != OP_TEXT:
                        raise ConnectionClosed(1003, 'unexpected binary frame')
                    return message.decode('utf-8')

    def close(self, code: int = 1000) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.send(OP_CLOSE, struct.pack('!H', code))
        except OSError:
            pass
        self.sock.close()


# --------------------------------------------------------------------------- Atlas protocol

class Fatal(Exception):
    """Reconnecting cannot help (refused credentials or teams, unknown protocol version, a
    server certificate this client does not trust)."""


def untrusted(err: BaseException) -> Fatal | None:
    """A Fatal for a failed certificate check (retrying meets the same certificate), else None."""
    cause = err.reason if isinstance(err, urllib.error.URLError) else err   # urllib wraps it
    if isinstance(cause, ssl.SSLCertVerificationError):
        return Fatal(f'TLS: {cause.verify_message or cause} (the server\'s certificate does not verify; '
                     f'signed by a private CA? --cafile names it)')
    return None


class Done(Exception):
    """--max-events reached."""


class Deadline(Exception):
    """--timeout reached."""


class Team:
    def __init__(self) -> None:
        self.tasks: dict[str, dict] = {}
        self.last: int | None = None   # the seq `tasks` is current as of; None = unknown


class AtlasClient:
    def __init__(self, base_url: str, token: str, teams: list[str] | None, on_event,
                 ws_path: str = '/realtime', api_prefix: str = '', cafile: str | None = None) -> None:
        self.base_url, self.token, self.wanted = base_url.rstrip('/'), token, teams
        self.on_event, self.ws_path, self.api_prefix = on_event, ws_path, api_prefix
        # One trust for HTTPS and WSS: the system's CAs, or only those of `cafile` (PEM).
        self.ssl_context = ssl.create_default_context(cafile=cafile)
        self.teams: dict[str, Team] = {t: Team() for t in teams or []}
        self.heartbeat_ms = 30_000

    # ---- HTTP
    def fetch_page(self, team_id: str, cursor: str | None) -> dict:
        """One page of the list: {tasks, seq, nextCursor}; retried with backoff."""
        url = f'{self.base_url}{self.api_prefix}/teams/{urllib.parse.quote(team_id)}/tasks'
        if cursor is not None:
            url += '?' + urllib.parse.urlencode({'cursor': cursor})
        req = urllib.request.Request(url, headers={'Authorization': f'Bearer {self.token}'})
        for attempt in range(8):
            try:
                with urllib.request.urlopen(req, timeout=10, context=self.ssl_context) as res:
                    return json.load(res)
            except urllib.error.HTTPError as err:
                if err.code in (400, 401, 403):
                    raise Fatal(f'GET {url.split("?")[0]}: {err.code} {err.read().decode()}') from err
                log(f'list of {team_id} failed ({err.code}), retrying')
            except (OSError, ValueError) as err:
                if (fatal := untrusted(err)) is not None:
                    raise fatal from err
                log(f'list of {team_id} failed ({err}), retrying')
            time.sleep(random.uniform(0, min(10.0, 0.25 * 2 ** attempt)))
        raise ConnectionClosed(1006, f'could not fetch the list of {team_id}')

    def fetch_list(self, team_id: str) -> tuple[list[dict], int]:
        """Every page, following nextCursor; the seq is the FIRST page's. Later pages are read at
        later seqs, but events carry whole tasks: applying the events after the first page's
        seq, in order, brings the whole list to the present."""
        first = self.fetch_page(team_id, None)
        tasks, pages = list(first['tasks']), 1
        cursor = first.get('nextCursor')        # absent on a server without pagination
        while cursor is not None:
            page = self.fetch_page(team_id, cursor)
            tasks += page['tasks']
            pages += 1
            cursor = page.get('nextCursor')
        if pages > 1:
            log(f'list of {team_id}: {len(tasks)} tasks in {pages} pages')
        return tasks, first['seq']

    def resync(self, team_id: str) -> None:
        # Runs after the team's subscribed/resync frame. The fetch blocks this thread, so events
        # arriving meanwhile wait in the socket (our buffer) and apply() drops those <= seq.
        tasks, seq = self.fetch_list(team_id)
        team = self.teams[team_id]
        team.tasks = {t['id']: t for t in tasks}
        team.last = seq
        log(f'ready team={team_id} last={seq} tasks={len(tasks)}')

    # ---- events
    def apply(self, event: dict, recv_ms: float) -> None:
        team = self.teams.get(event.get('teamId'))
        if team is None:
            log(f'unexpected event for team {event.get("teamId")}: {json.dumps(event)}')
            return
        if team.last is None or event['seq'] <= team.last:
            return                                  # duplicate (or covered by the coming list)
        if event['seq'] > team.last + 1:
            log(f'gap in {event["teamId"]}: {team.last} -> {event["seq"]}, resyncing')
            self.resync(event['teamId'])
            if event['seq'] != team.last + 1:       # covered by the list (or still a hole)
                return
        if event['type'] in ('task.created', 'task.updated'):
            team.tasks[event['taskId']] = event['task']
        elif event['type'] == 'task.deleted':
            team.tasks.pop(event['taskId'], None)
        else:
            return                                  # unknown event type: ignore
        team.last = event['seq']
        self.on_event(event, recv_ms)

    # ---- one connection
    def connect_url(self) -> tuple[str, set[str]]:
        u = urllib.parse.urlsplit(self.base_url)
        scheme = 'wss' if u.scheme == 'https' else 'ws'
        params = {}             # the credential goes in a header, never in the URL (access logs)
        if self.wanted is not None:
            params['teams'] = ','.join(self.wanted)
        since = {t: team.last for t, team in self.teams.items() if team.last is not None}
        if since:
            params['since'] = ','.join(f'{t}:{s}' for t, s in since.items())
        query = urllib.parse.urlencode(params, safe=':,')
        return f'{scheme}://{u.netloc}{self.ws_path}' + (f'?{query}' if query else ''), set(since)

    def run_connection(self, deadline: float) -> None:
        url, resumed = self.connect_url()
        log(f'connecting {url}')
        try:
            # Offering atlas.v1 makes the server tell a refused credential or team by close code
            # (4001/4003) after the handshake; without it, by HTTP status (401/403). Both are fatal.
            ws = WebSocket(url, headers={'Authorization': f'Bearer {self.token}'},
                           protocols=[SUBPROTOCOL], context=self.ssl_context)
        except UpgradeRefused as err:
            if err.status in (400, 401, 403):
                raise Fatal(str(err)) from err
            raise ConnectionClosed(1006, str(err)) from err
        except OSError as err:
            if (fatal := untrusted(err)) is not None:
                raise fatal from err
            raise
        try:
            while True:
                idle = 2 * self.heartbeat_ms / 1000 + 5     # no ping nor frame for that long: dead
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Deadline
                try:
                    text = ws.recv_text(min(idle, remaining))
                except socket.timeout:
                    if time.monotonic() >= deadline:
                        raise Deadline
                    raise ConnectionClosed(1006, 'no frame nor ping for too long')
                recv_ms = time.time() * 1000
                self.handle(json.loads(text), recv_ms, resumed)
        except ConnectionClosed as err:
            if err.code in (4001, 4003):    # unauthorized, forbidden_team: the same again is refused
                raise Fatal(f'closed {err.code} {err.reason}') from err
            raise
        except OSError as err:
            raise ConnectionClosed(1006, str(err)) from err
        finally:
            ws.close()

    def handle(self, frame: dict, recv_ms: float, resumed: set[str]) -> None:
        kind = frame.get('type')
        if kind == 'welcome':
            if frame.get('protocol') != 1:
                raise Fatal(f'unknown protocol version {frame.get("protocol")}')
            self.heartbeat_ms = frame.get('heartbeatMs', self.heartbeat_ms)
            if self.wanted is None:                     # all of the principal's teams
                for t in frame['teams']:
                    self.teams.setdefault(t, Team())
            log(f'welcome user={frame.get("userId")} teams={",".join(frame.get("teams", []))}')
        elif kind == 'subscribed':
            team_id = frame['teamId']
            log(f'subscribed team={team_id} seq={frame["seq"]} replayed={frame.get("replayed")}')
            if team_id not in resumed or self.teams[team_id].last != frame['seq']:
                self.resync(team_id)                    # first load (or an unexpected seq)
        elif kind == 'resync':
            log(f'resync team={frame["teamId"]} seq={frame["seq"]} reason={frame.get("reason")}')
            self.resync(frame['teamId'])
        elif kind in ('task.created', 'task.updated', 'task.deleted'):
            self.apply(frame, recv_ms)
        elif kind == 'error':
            log(f'error frame {frame.get("code")}: {frame.get("message")}')
        # pong, unsubscribed and unknown frame types need nothing here

    # ---- forever, with reconnects
    def run(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                self.run_connection(deadline)
            except ConnectionClosed as err:
                log(f'connection ended: {err.code} {err.reason}')
            except OSError as err:                      # e.g. connection refused
                log(f'connection failed: {err}')
            if time.monotonic() - started > 10:
                attempt = 0
            delay = random.uniform(0, min(30.0, 0.5 * 2 ** attempt))
            attempt += 1
            if time.monotonic() + delay >= deadline:
                raise Deadline
            log(f'reconnecting in {delay * 1000:.0f} ms')
            time.sleep(delay)


def main() -> int:
    p = argparse.ArgumentParser(description='Atlas Realtime client (protocol 1)')
    p.add_argument('--url', required=True, help='HTTP base URL, e.g. https://127.0.0.1:3000')
    p.add_argument('--token', required=True, help='sent as Authorization: Bearer, never in a URL')
    p.add_argument('--cafile', help='PEM file of the CA(s) to trust for https/wss (default: the system\'s)')
    p.add_argument('--teams', help='comma-separated teams (default: all of the user\'s teams)')
    p.add_argument('--max-events', type=int, help='exit after applying this many events')
    p.add_argument('--timeout', type=float, default=60.0, help='exit after this many seconds')
    p.add_argument('--json', action='store_true', help='one JSON line per applied event')
    p.add_argument('--ws-path', default='/realtime')
    p.add_argument('--api-prefix', default='')
    args = p.parse_args()
    count = 0

    def on_event(event: dict, recv_ms: float) -> None:
        nonlocal count
        if args.json:
            out = {'recv_ms': recv_ms, 'teamId': event['teamId'], 'seq': event['seq'],
                   'type': event['type'], 'taskId': event['taskId']}
            print(json.dumps(out), flush=True)
        else:
            title = event.get('task', {}).get('title', '')
            print(f'{event["teamId"]} #{event["seq"]} {event["type"]} {event["taskId"]} {title}', flush=True)
        count += 1
        if args.max_events is not None and count >= args.max_events:
            raise Done

    teams = [t for t in args.teams.split(',') if t] if args.teams is not None else None
    try:
        client = AtlasClient(args.url, args.token, teams, on_event, args.ws_path, args.api_prefix, args.cafile)
    except (OSError, ssl.SSLError) as err:          # an unreadable or malformed --cafile
        log(f'fatal: --cafile {args.cafile}: {err}')
        return 1
    try:
        client.run(args.timeout)
    except Done:
        return 0
    except Deadline:
        log(f'timeout after {args.timeout} s ({count} events)')
        return 0 if args.max_events is None else 2
    except Fatal as err:
        log(f'fatal: {err}')
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
