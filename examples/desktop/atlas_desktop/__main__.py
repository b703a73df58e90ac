"""python3 -m atlas_desktop --base-url URL (--token JWT | --user NAME) [--team T] [--state-file PATH]"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import ssl
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='atlas_desktop', description='Atlas task board (desktop, offline-first).')
    parser.add_argument('--base-url', default=os.environ.get('ATLAS_BASE_URL', 'http://127.0.0.1:3000'),
                        help='the server (the task routes at BASE/teams/..., the socket at BASE/realtime); default %(default)s')
    who = parser.add_mutually_exclusive_group()
    who.add_argument('--token', default=os.environ.get('ATLAS_TOKEN'),
                     help='bearer token (JWT) sent as Authorization: Bearer; or set ATLAS_TOKEN')
    who.add_argument('--user', help="a demo user (alice, bob, carol, dave) whose token the example server lists at "
                                    "/demo/tokens (only when started without JWT_SECRET: `npm start`)")
    parser.add_argument('--team', help="the team to show (default: the token's first team)")
    parser.add_argument('--state-file', help='where the tasks and the unsent edits are kept between runs '
                                             '(default: ~/.local/state/atlas-desktop/USER-TEAM.json)')
    parser.add_argument('--ca-file', help='PEM file of the CA that signed an https server certificate')
    args = parser.parse_args(argv)

    ssl_context = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
    # Imported here so that --help works without Qt.
    from .api import Api, fetch_demo_token
    token = args.token
    if args.user:
        token = fetch_demo_token(args.base_url, args.user, ssl_context=ssl_context)
    if not token:
        parser.error('give --token (or ATLAS_TOKEN) or --user')
    claims = _claims(token)
    user = str(claims.get('sub', args.user or 'me'))
    team = args.team or next(iter(claims.get('teams') or []), None)
    if not team:
        parser.error('give --team (the token names no team)')
    state_file = args.state_file or os.path.join(
        os.environ.get('XDG_STATE_HOME', os.path.expanduser('~/.local/state')), 'atlas-desktop', f'{user}-{team}.json')

    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication
    from .client import SyncClient
    from .ui import BoardWindow
    app = QApplication.instance() or QApplication(sys.argv[:1])
    client = SyncClient(Api(args.base_url, token, ssl_context=ssl_context), team, state_file, user=user,
                        ssl_context=ssl_context)
    window = BoardWindow(client)
    window.show()
    client.start()
    # Quitting any way (the window, Ctrl+C) saves the state file: the unsent edits survive.
    app.aboutToQuit.connect(client.stop)
    signal.signal(signal.SIGINT, lambda *_: app.quit())
    ticker = QTimer()   # Python runs signal handlers only between Qt's calls into it
    ticker.start(250)
    ticker.timeout.connect(lambda: None)
    print(f'Atlas desktop: team {team} as {user} on {args.base_url}; state in {state_file}', file=sys.stderr)
    return app.exec_()


def _claims(token: str) -> dict:
    """The JWT's payload, unverified: only to name the user and default the team."""
    try:
        payload = token.split('.')[1]
        return json.loads(base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


if __name__ == '__main__':
    sys.exit(main())
