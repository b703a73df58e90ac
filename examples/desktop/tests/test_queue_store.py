"""The offline queue, the state file and the store on their own (no server, no window)."""

from __future__ import annotations

import json
import os

import pytest

from atlas_desktop.queue import LOCAL_PREFIX, Entry, OfflineQueue, StateFile
from atlas_desktop.store import GapError, Store


def task(id_, version, **fields):
    return {'id': id_, 'teamId': 'red', 'title': 't', 'description': '', 'status': 'todo', 'assignee': None,
            'dueDate': None, 'version': version, **fields}


def test_edits_of_one_task_chain_their_if_match_and_a_create_gives_its_id():
    q = OfflineQueue()
    create = q.append(Entry.new('create', 'red', None, {'title': 'new'}, None))
    rename = q.append(Entry.new('update', 'red', create.task_id, {'title': 'renamed'}, None))
    other = q.append(Entry.new('update', 'red', 'b', {'status': 'done'}, 7))
    move = q.append(Entry.new('update', 'red', create.task_id, {'status': 'done'}, None))
    assert create.task_id.startswith(LOCAL_PREFIX) and rename.chained and move.chained and not other.chained
    assert len({e.key for e in q}) == 4
    q.succeeded(create, task('a', 1))
    assert (rename.task_id, rename.if_match, rename.chained) == ('a', 1, False)
    assert move.task_id == 'a' and move.chained
    q.succeeded(rename, task('a', 2))
    assert (move.if_match, move.chained) == (2, False)
    assert other.if_match == 7


def test_dropping_an_edit_drops_the_later_edits_built_on_it():
    q = OfflineQueue()
    a1 = q.append(Entry.new('update', 'red', 'a', {'title': 'x'}, 3))
    b1 = q.append(Entry.new('update', 'red', 'b', {'title': 'y'}, 1))
    a2 = q.append(Entry.new('delete', 'red', 'a', None, None))
    assert q.drop(a1) == [a1, a2]
    assert q.entries == [b1]


def test_the_state_file_is_replaced_whole_and_keeps_the_keys(tmp_path):
    path = tmp_path / 'state' / 'alice-red.json'
    sf = StateFile(str(path))
    assert sf.load() is None
    q = OfflineQueue()
    e = q.append(Entry.new('create', 'red', None, {'title': 'offline'}, None))
    sf.save({'team': 'red', 'queue': q.to_json()})
    sf.save({'team': 'red', 'queue': q.to_json()})
    assert os.listdir(path.parent) == ['alice-red.json']   # no temporary file left behind
    doc = sf.load()
    again = OfflineQueue.from_json(doc['queue'])
    assert [(x.key, x.op, x.body) for x in again] == [(e.key, 'create', {'title': 'offline'})]
    path.write_text(json.dumps({'format': 99}))
    with pytest.raises(ValueError):
        sf.load()


def test_events_apply_once_in_seq_order_and_a_gap_is_reported():
    s = Store('red')
    s.snapshot([task('a', 1)], 4)
    created = {'type': 'task.created', 'teamId': 'red', 'seq': 5, 'taskId': 'b', 'task': task('b', 1)}
    assert s.apply(created) and not s.apply(created)
    assert not s.apply({**created, 'seq': 3})
    with pytest.raises(GapError):
        s.apply({'type': 'task.deleted', 'teamId': 'red', 'seq': 7, 'taskId': 'a', 'version': 1})
    s.apply({'type': 'task.deleted', 'teamId': 'red', 'seq': 6, 'taskId': 'a', 'version': 1})
    assert list(s.tasks) == ['b'] and s.last == 6 and s.applied_seqs == [5, 6]


def test_an_answer_never_makes_a_task_older_and_the_pending_layer_shows_over_it():
    s = Store('red')
    s.snapshot([task('a', 3, title='newest')], 10)
    s.answer(Entry.new('update', 'red', 'a', {'title': 'old'}, 1), task('a', 2, title='old'))
    assert s.tasks['a']['title'] == 'newest'
    q = OfflineQueue()
    q.append(Entry.new('update', 'red', 'a', {'status': 'done'}, 3))
    q.append(Entry.new('create', 'red', None, {'title': 'made offline'}, None))
    view = s.view(q)
    assert view['a']['status'] == 'done' and view['a']['_pending'] and s.tasks['a']['status'] == 'todo'
    assert [t['title'] for t in view.values()] == ['newest', 'made offline']
    q.append(Entry.new('delete', 'red', 'a', None, None))
    assert [t['title'] for t in s.view(q).values()] == ['made offline']
