"""The desktop board against a real example server (issue 16)."""

from __future__ import annotations

import json
import os

from conftest import ARTIFACTS, sign, wait_live
from qtpy.QtWidgets import QApplication


def by_title(window, title):
    return next((t for t in window.client.view().values() if t.get('title') == title), None)


def test_two_clients_see_each_others_edits(qtbot, server, desktop, proxies):
    proxy = proxies()   # bob's network, cut at the end for the screenshot
    alice = desktop('alice', server.base_url)
    bob = desktop('bob', proxy.base_url)
    wait_live(qtbot, alice, bob)

    # alice creates: on her board at once (pending), then on bob's live.
    alice.client.create({'title': 'Write the release notes', 'assignee': 'alice', 'dueDate': '2026-12-01'})
    assert alice.titles('todo') == ['Write the release notes']
    qtbot.waitUntil(lambda: bob.titles('todo') == ['Write the release notes'], timeout=10000)
    task_id = by_title(bob, 'Write the release notes')['id']

    # bob moves it and renames it; alice sees both.
    bob.client.move(task_id, 'in_progress')
    bob.client.update(task_id, {'title': 'Write and send the release notes'})
    qtbot.waitUntil(lambda: alice.titles('in_progress') == ['Write and send the release notes'], timeout=10000)
    assert alice.titles('todo') == []

    # more tasks, then alice deletes one; bob sees the same board.
    for title, status in (('Fix login', 'todo'), ('Ship 1.2', 'done'), ('Obsolete', 'todo')):
        alice.client.create({'title': title, 'status': status})
    qtbot.waitUntil(lambda: len(bob.client.view()) == 4 and not alice.client.queue, timeout=10000)
    alice.client.delete(by_title(alice, 'Obsolete')['id'])
    qtbot.waitUntil(lambda: by_title(bob, 'Obsolete') is None and not alice.client.queue, timeout=10000)
    qtbot.waitUntil(lambda: bob.client.store.last == alice.client.store.last == 7, timeout=10000)
    for w in (alice, bob):
        assert w.titles('todo') == ['Fix login']
        assert w.titles('in_progress') == ['Write and send the release notes']
        assert w.titles('done') == ['Ship 1.2']
    tasks, seq = server.tasks('red', sign('carol', ['red']))
    assert seq == 7 and sorted(t['title'] for t in tasks) == ['Fix login', 'Ship 1.2', 'Write and send the release notes']

    # The window as a user sees it, with one edit pending offline (bob's network cut).
    proxy.set_online(False)
    qtbot.waitUntil(lambda: bob.client.state == 'offline', timeout=10000)
    bob.client.move(by_title(bob, 'Fix login')['id'], 'in_progress')
    qtbot.waitUntil(lambda: bob.client.queue.head().last_error != '', timeout=10000)
    assert bob.titles('in_progress') == ['Write and send the release notes', 'Fix login']
    QApplication.processEvents()   # the labels' new sizes are laid out
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, 'desktop-board.png')
    assert bob.grab().save(path, 'PNG'), 'saving the screenshot'
    assert os.path.getsize(path) > 5000
    print(f'screenshot: {path}')


def test_server_killed_and_restarted_both_catch_up(qtbot, server, desktop):
    carol = sign('carol', ['red'])
    alice = desktop('alice', server.base_url)
    bob = desktop('bob', server.base_url)
    wait_live(qtbot, alice, bob)
    for i in range(3):
        alice.client.create({'title': f'before {i}'})
    qtbot.waitUntil(lambda: bob.client.store.last == 3 and alice.client.store.last == 3, timeout=10000)
    snapshots = (alice.client.store.snapshots, bob.client.store.snapshots)
    connections = (alice.client.worker.connections, bob.client.worker.connections)

    server.kill()
    qtbot.waitUntil(lambda: alice.client.state != 'live' and bob.client.state != 'live', timeout=10000)
    # bob edits while the server is down: it waits in his queue.
    bob.client.create({'title': 'made while the server was dead'})
    assert by_title(bob, 'made while the server was dead')['_pending']

    server.start()
    # Others write as soon as it is back, while the clients are still in their backoff or resuming.
    for i in range(5):
        status, _ = server.http('POST', '/teams/red/tasks', carol, {'title': f'after {i}'})
        assert status == 201
    tasks, _ = server.tasks('red', carol)
    qtbot.waitUntil(lambda: not bob.client.queue, timeout=15000)
    tasks, seq = server.tasks('red', carol)
    assert seq == 9 and len(tasks) == 9
    expected = sorted(t['title'] for t in tasks)
    for w in (alice, bob):
        qtbot.waitUntil(lambda: w.client.store.last == 9, timeout=15000)
        assert sorted(t['title'] for t in w.client.view().values()) == expected
        assert w.client.store.tasks == {t['id']: t for t in tasks}
        # Caught up by resuming with since (every seq applied once, in order), not by reloading.
        assert w.client.store.applied_seqs == list(range(1, 10))
    assert (alice.client.store.snapshots, bob.client.store.snapshots) == snapshots
    assert alice.client.worker.connections > connections[0] and bob.client.worker.connections > connections[1]


def test_offline_edit_survives_restart_and_lands_once(qtbot, server, desktop, tmp_path):
    bob_token = sign('bob', ['red'])
    status, existing = server.http('POST', '/teams/red/tasks', bob_token, {'title': 'Existing task'})
    assert status == 201
    alice = desktop('alice', server.base_url, state='alice-offline.json')
    wait_live(qtbot, alice)
    qtbot.waitUntil(lambda: by_title(alice, 'Existing task') is not None, timeout=10000)

    server.kill()
    qtbot.waitUntil(lambda: alice.client.state != 'live', timeout=10000)
    created = alice.client.create({'title': 'Written on the train'})
    moved = alice.client.move(existing['id'], 'done')
    assert alice.titles('todo') == ['Written on the train'] and alice.titles('done') == ['Existing task']
    # Tried and failed without an answer: still there, nothing rolled back.
    qtbot.waitUntil(lambda: created.attempts >= 2, timeout=10000)
    assert [e.key for e in alice.client.queue] == [created.key, moved.key]
    assert alice.titles('todo') == ['Written on the train']

    # The app is closed while offline; the state file holds both edits with their keys.
    alice.close()
    state = json.load(open(tmp_path / 'alice-offline.json'))
    assert [(e['key'], e['op']) for e in state['queue']] == [(created.key, 'create'), (moved.key, 'update')]

    # Started again, still offline: the board shows the edits from the file at once.
    again = desktop('alice', server.base_url, state='alice-offline.json')
    assert again.titles('todo') == ['Written on the train'] and again.titles('done') == ['Existing task']
    qtbot.waitUntil(lambda: again.client.queue.head().attempts >= 1 and again.client.state != 'live', timeout=10000)

    server.start()
    wait_live(qtbot, again)
    qtbot.waitUntil(lambda: not again.client.queue, timeout=15000)
    tasks, seq = server.tasks('red', bob_token)
    assert sorted((t['title'], t['status']) for t in tasks) == [('Existing task', 'done'), ('Written on the train', 'todo')]
    events = server.events('red', bob_token)
    assert [(e['type'], e['mutationId']) for e in events] == [
        ('task.created', None), ('task.created', created.key), ('task.updated', moved.key)]
    assert seq == 3
    qtbot.waitUntil(lambda: again.client.store.last == 3, timeout=10000)
    assert again.titles('todo') == ['Written on the train'] and again.titles('done') == ['Existing task']
    assert not any(t.get('_pending') for t in again.client.view().values())


def test_lost_answer_is_retried_with_the_same_key_and_applied_once(qtbot, server, desktop, proxies):
    proxy = proxies()
    alice = desktop('alice', proxy.base_url)
    wait_live(qtbot, alice)
    # The POST reaches the server and commits; its answer is lost on the way back.
    proxy.drop_next_response(b'POST /teams/red/tasks')
    entry = alice.client.create({'title': 'Sent once, answered never'})
    qtbot.waitUntil(lambda: not alice.client.queue, timeout=15000)
    assert proxy.dropped == 1
    assert entry.attempts >= 2
    # The retry carried the same key: the server replayed the original answer.
    assert (entry.key, 200, True) in alice.client.sent_log
    token = sign('bob', ['red'])
    tasks, _ = server.tasks('red', token)
    assert [t['title'] for t in tasks] == ['Sent once, answered never']
    assert [(e['type'], e['mutationId']) for e in server.events('red', token)] == [('task.created', entry.key)]
    qtbot.waitUntil(lambda: alice.client.store.last == 1, timeout=10000)
    assert alice.titles('todo') == ['Sent once, answered never']


def test_conflicts_412_keep_mine_take_theirs_and_404(qtbot, server, desktop, proxies):
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QPushButton
    proxy = proxies()
    alice = desktop('alice', proxy.base_url)
    bob = desktop('bob', server.base_url)
    wait_live(qtbot, alice, bob)
    bob.client.create({'title': 'Plan the offsite'})
    bob.client.create({'title': 'Book the venue'})
    qtbot.waitUntil(lambda: alice.client.store.last == 2 and not bob.client.queue, timeout=10000)
    plan = by_title(alice, 'Plan the offsite')['id']
    venue = by_title(alice, 'Book the venue')['id']

    def click(window, entry, name):
        qtbot.waitUntil(lambda: entry.key in window.conflict_dialogs, timeout=15000)
        dialog = window.conflict_dialogs[entry.key]
        button = dialog.findChild(QPushButton, name)
        assert button is not None, name
        qtbot.mouseClick(button, Qt.LeftButton)
        return dialog

    # 1. Both rename the same task; alice is offline meanwhile. She keeps hers.
    proxy.set_online(False)
    qtbot.waitUntil(lambda: alice.client.state != 'live', timeout=10000)
    mine = alice.client.update(plan, {'title': 'Plan the offsite (Lisbon)'})
    bob.client.update(plan, {'title': 'Plan the offsite (Porto)'})
    qtbot.waitUntil(lambda: not bob.client.queue, timeout=10000)
    proxy.set_online(True)
    qtbot.waitUntil(lambda: mine.conflict is not None, timeout=15000)
    assert mine.conflict['status'] == 412 and mine.conflict['theirs']['title'] == 'Plan the offsite (Porto)'
    dialog = click(alice, mine, 'keepMine')
    assert 'Porto' in ' '.join(w.text() for w in dialog.theirs_text.findChildren(type(dialog.theirs_text.layout().itemAt(0).widget())))
    qtbot.waitUntil(lambda: not alice.client.queue, timeout=10000)
    qtbot.waitUntil(lambda: by_title(bob, 'Plan the offsite (Lisbon)') is not None, timeout=10000)
    status, task = server.http('GET', f'/teams/red/tasks/{plan}', sign('bob', ['red']))
    assert task['title'] == 'Plan the offsite (Lisbon)' and task['version'] == 3

    # 2. Again, and this time alice takes bob's version: her edit is dropped, his stays.
    proxy.set_online(False)
    qtbot.waitUntil(lambda: alice.client.state != 'live', timeout=10000)
    mine = alice.client.move(plan, 'done')
    bob.client.update(plan, {'title': 'Plan the offsite (Faro)'})
    qtbot.waitUntil(lambda: not bob.client.queue, timeout=10000)
    proxy.set_online(True)
    click(alice, mine, 'takeTheirs')
    qtbot.waitUntil(lambda: not alice.client.queue, timeout=10000)
    qtbot.waitUntil(lambda: alice.titles('todo') == ['Plan the offsite (Faro)', 'Book the venue'], timeout=10000)
    status, task = server.http('GET', f'/teams/red/tasks/{plan}', sign('bob', ['red']))
    assert (task['title'], task['status'], task['version']) == ('Plan the offsite (Faro)', 'todo', 4)

    # 3. alice edits a task bob deletes meanwhile: a 404 conflict, shown with both sides; she
    #    re-creates hers.
    proxy.set_online(False)
    qtbot.waitUntil(lambda: alice.client.state != 'live', timeout=10000)
    mine = alice.client.update(venue, {'assignee': 'alice'})
    bob.client.delete(venue)
    qtbot.waitUntil(lambda: not bob.client.queue, timeout=10000)
    proxy.set_online(True)
    qtbot.waitUntil(lambda: mine.conflict is not None, timeout=15000)
    assert mine.conflict['status'] == 404
    assert by_title(alice, 'Book the venue')['_conflict']   # still on her board, marked
    click(alice, mine, 'keepMine')
    qtbot.waitUntil(lambda: not alice.client.queue, timeout=10000)
    qtbot.waitUntil(lambda: by_title(bob, 'Book the venue') is not None, timeout=10000)
    recreated = by_title(bob, 'Book the venue')
    assert recreated['id'] != venue and recreated['assignee'] == 'alice'
