"""The window: a team's tasks in three columns, the connection state, edit and conflict dialogs."""

from __future__ import annotations

from typing import Optional

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFormLayout, QGridLayout,
                            QGroupBox, QHBoxLayout, QLabel, QLineEdit, QListWidget,
                            QListWidgetItem, QMainWindow, QMessageBox, QPlainTextEdit,
                            QPushButton, QVBoxLayout, QWidget)

from .client import EDITABLE, SyncClient
from .queue import Entry
from .realtime import CONNECTING, LIVE, LOADING, OFFLINE, STOPPED
from .store import STATUSES

COLUMN_TITLES = {'todo': 'To do', 'in_progress': 'In progress', 'done': 'Done'}
STATE_STYLE = {LIVE: ('#1a7f37', 'Live'), LOADING: ('#9a6700', 'Loading'), CONNECTING: ('#9a6700', 'Connecting'),
               OFFLINE: ('#cf222e', 'Offline'), STOPPED: ('#6e7781', 'Stopped')}
TASK_ID_ROLE = Qt.UserRole


class BoardWindow(QMainWindow):
    def __init__(self, client: SyncClient) -> None:
        super().__init__()
        self.client = client
        self.setWindowTitle(f'Atlas: team {client.team}' + (f' ({client.user})' if client.user else ''))
        self.resize(960, 560)
        self.conflict_dialogs: dict[str, ConflictDialog] = {}

        root = QWidget()
        layout = QVBoxLayout(root)
        bar = QHBoxLayout()
        self.state_label = QLabel()
        self.state_label.setObjectName('connectionState')
        self.pending_label = QLabel()
        self.pending_label.setObjectName('pendingCount')
        self.new_button = QPushButton('New task…')
        self.new_button.clicked.connect(self.new_task)
        bar.addWidget(QLabel(f'<b>Team {client.team}</b>' + (f' · {client.user}' if client.user else '')))
        bar.addStretch(1)
        bar.addWidget(self.pending_label)
        bar.addWidget(self.state_label)
        bar.addWidget(self.new_button)
        layout.addLayout(bar)

        grid = QGridLayout()
        self.columns: dict[str, QListWidget] = {}
        for i, status in enumerate(STATUSES):
            box = QGroupBox(COLUMN_TITLES[status])
            inner = QVBoxLayout(box)
            lst = QListWidget()
            lst.setObjectName(f'column_{status}')
            lst.setWordWrap(True)
            lst.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
            lst.itemDoubleClicked.connect(lambda item: self.edit_task(item.data(TASK_ID_ROLE)))
            inner.addWidget(lst)
            buttons = QHBoxLayout()
            for label, handler in (('◀', lambda _=False, s=status: self._move_selected(s, -1)),
                                   ('Edit', lambda _=False, s=status: self._edit_selected(s)),
                                   ('Delete', lambda _=False, s=status: self._delete_selected(s)),
                                   ('▶', lambda _=False, s=status: self._move_selected(s, +1))):
                b = QPushButton(label)
                b.clicked.connect(handler)
                if (label == '◀' and i == 0) or (label == '▶' and i == len(STATUSES) - 1):
                    b.setEnabled(False)
                buttons.addWidget(b)
            inner.addLayout(buttons)
            grid.addWidget(box, 0, i)
            self.columns[status] = lst
        layout.addLayout(grid, 1)

        self.log = QPlainTextEdit()
        self.log.setObjectName('activityLog')
        self.log.setReadOnly(True)
        self.log.setMaximumHeight(110)
        layout.addWidget(self.log)
        self.setCentralWidget(root)

        client.changed.connect(self.refresh)
        client.connection.connect(lambda *_: self.refresh_state())
        client.notice.connect(self.log.appendPlainText)
        client.conflict.connect(self.show_conflict)
        self.refresh()
        # Conflicts that were waiting in the state file when the app was closed.
        for entry in client.conflicts():
            self.show_conflict(entry)

    # Drawing

    def refresh(self) -> None:
        view = self.client.view()
        for status, lst in self.columns.items():
            selected = {i.data(TASK_ID_ROLE) for i in lst.selectedItems()}
            lst.clear()
            for task in view.values():
                if task.get('status') != status:
                    continue
                item = QListWidgetItem(_label(task))
                item.setData(TASK_ID_ROLE, task['id'])
                item.setToolTip(task.get('description') or '')
                if task.get('_conflict'):
                    item.setForeground(QColor('#cf222e'))
                elif task.get('_pending'):
                    item.setForeground(QColor('#6e7781'))
                lst.addItem(item)
                if task['id'] in selected:
                    item.setSelected(True)
        self.refresh_state()

    def refresh_state(self) -> None:
        color, word = STATE_STYLE.get(self.client.state, ('#6e7781', self.client.state))
        self.state_label.setText(f'<span style="color:{color}">●</span> {word}')
        self.state_label.setToolTip(self.client.state_detail)
        waiting = len(self.client.queue)
        conflicts = len(self.client.conflicts())
        text = f'{waiting} edit(s) waiting' if waiting else 'all saved'
        if conflicts:
            text += f', {conflicts} conflict(s)'
        self.pending_label.setText(text)
        self.pending_label.setToolTip('\n'.join(f'{e.op} {e.task_id} (tried {e.attempts}x{": " + e.last_error if e.last_error else ""})'
                                               for e in self.client.queue))

    def titles(self, status: str) -> list[str]:
        """The titles shown in a column (pending marks stripped), for tests and scripts."""
        lst = self.columns[status]
        return [lst.item(i).text().split('  ·')[0].lstrip('↻⚠ ').strip() for i in range(lst.count())]

    # Actions

    def _selected(self, status: str) -> Optional[str]:
        items = self.columns[status].selectedItems()
        return items[0].data(TASK_ID_ROLE) if items else None

    def _move_selected(self, status: str, step: int) -> None:
        task_id = self._selected(status)
        if task_id is not None:
            target = STATUSES[STATUSES.index(status) + step]
            self.client.move(task_id, target)

    def _edit_selected(self, status: str) -> None:
        task_id = self._selected(status)
        if task_id is not None:
            self.edit_task(task_id)

    def _delete_selected(self, status: str) -> None:
        task_id = self._selected(status)
        if task_id is not None:
            self.client.delete(task_id)

    def new_task(self) -> None:
        dialog = TaskDialog(self, None)
        if dialog.exec_() == QDialog.Accepted:
            self.client.create(dialog.fields())

    def edit_task(self, task_id: str) -> None:
        task = self.client.view().get(task_id)
        if task is None:
            return
        dialog = TaskDialog(self, task)
        if dialog.exec_() == QDialog.Accepted:
            self.client.update(task_id, dialog.fields())

    def show_conflict(self, entry: Entry) -> None:
        if entry.key in self.conflict_dialogs:
            return
        dialog = ConflictDialog(self, entry)
        self.conflict_dialogs[entry.key] = dialog

        def chosen(choice: str) -> None:
            self.conflict_dialogs.pop(entry.key, None)
            dialog.close()
            self.client.resolve(entry, choice)
        dialog.chosen = chosen
        dialog.show()   # not modal: the board stays live behind it

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        for dialog in list(self.conflict_dialogs.values()):
            dialog.close()
        self.client.stop()
        super().closeEvent(event)


class TaskDialog(QDialog):
    def __init__(self, parent: QWidget, task: Optional[dict]) -> None:
        super().__init__(parent)
        self.setWindowTitle('Edit task' if task else 'New task')
        form = QFormLayout(self)
        task = task or {}
        self.title = QLineEdit(task.get('title', ''))
        self.description = QPlainTextEdit(task.get('description', ''))
        self.status = QComboBox()
        for s in STATUSES:
            self.status.addItem(COLUMN_TITLES[s], s)
        self.status.setCurrentIndex(STATUSES.index(task.get('status', 'todo')))
        self.assignee = QLineEdit(task.get('assignee') or '')
        self.due = QLineEdit(task.get('dueDate') or '')
        self.due.setPlaceholderText('YYYY-MM-DD')
        form.addRow('Title', self.title)
        form.addRow('Description', self.description)
        form.addRow('Status', self.status)
        form.addRow('Assignee', self.assignee)
        form.addRow('Due', self.due)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _accept(self) -> None:
        if not self.title.text().strip():
            QMessageBox.warning(self, 'Title', 'A task needs a title.')
            return
        self.accept()

    def fields(self) -> dict:
        return {'title': self.title.text().strip(), 'description': self.description.toPlainText(),
                'status': self.status.currentData(), 'assignee': self.assignee.text().strip() or None,
                'dueDate': self.due.text().strip() or None}


class ConflictDialog(QDialog):
    """Both versions side by side and the choices that fit the refusal. Buttons are named
    `keepMine` and `takeTheirs` (tests click them)."""

    def __init__(self, parent: QWidget, entry: Entry) -> None:
        super().__init__(parent)
        self.entry = entry
        self.chosen = lambda choice: None
        conflict = entry.conflict or {}
        status = conflict.get('status')
        theirs = conflict.get('theirs')
        mine = {**(entry.base or {}), **(entry.body or {})}
        self.setWindowTitle('Conflict')
        layout = QVBoxLayout(self)
        if status == 412:
            what = 'Someone changed this task after you edited it.'
            keep, take = 'Keep mine', 'Take theirs'
        elif status == 404:
            what = 'This task was deleted by someone else while you edited it.'
            keep, take = ('Re-create mine', 'Discard mine') if entry.op == 'update' else (None, 'OK')
        elif status == 403:
            what = f'You are no longer a member of team {entry.team}; your edit cannot be saved there.'
            keep, take = 'Retry later', 'Discard mine'
        else:
            what = f'The server refused this edit ({status} {conflict.get("code")}: {conflict.get("message")}).'
            keep, take = 'Try again', 'Discard mine'
        intro = QLabel(f'<b>{what}</b><br>Your edit: {_describe(entry)}')
        intro.setWordWrap(True)
        layout.addWidget(intro)
        sides = QHBoxLayout()
        self.mine_text = _version_box('Yours', mine if entry.op != 'delete' else None, 'deleted by you', entry.body)
        self.theirs_text = _version_box('Theirs (on the server)', theirs, 'deleted', None)
        sides.addWidget(self.mine_text)
        sides.addWidget(self.theirs_text)
        layout.addLayout(sides)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        if keep is not None:
            self.keep_button = QPushButton(keep)
            self.keep_button.setObjectName('keepMine')
            self.keep_button.clicked.connect(lambda: self.chosen('mine'))
            buttons.addWidget(self.keep_button)
        self.take_button = QPushButton(take)
        self.take_button.setObjectName('takeTheirs')
        self.take_button.clicked.connect(lambda: self.chosen('theirs'))
        buttons.addWidget(self.take_button)
        layout.addLayout(buttons)


def _version_box(title: str, task: Optional[dict], absent: str, changed: Optional[dict]) -> QGroupBox:
    box = QGroupBox(title)
    form = QFormLayout(box)
    if task is None:
        form.addRow(QLabel(f'<i>{absent}</i>'))
        return box
    for field in EDITABLE:
        value = task.get(field)
        text = '—' if value in (None, '') else str(value)
        label = QLabel(f'<b>{text}</b>' if changed and field in changed else text)
        label.setWordWrap(True)
        form.addRow(field, label)
    if task.get('version'):
        form.addRow('version', QLabel(str(task['version'])))
    if task.get('updatedBy'):
        form.addRow('by', QLabel(str(task['updatedBy'])))
    return box


def _describe(entry: Entry) -> str:
    if entry.op == 'delete':
        return 'delete'
    return ', '.join(f'{k} → {v!r}' for k, v in (entry.body or {}).items())


def _label(task: dict) -> str:
    # Marks from fonts every desktop has (DejaVu, Segoe UI, SF): pending ↻, conflict ⚠.
    mark = '⚠ ' if task.get('_conflict') else ('↻ ' if task.get('_pending') else '')
    extra = [x for x in (task.get('assignee'), task.get('dueDate')) if x]
    return mark + task.get('title', '') + (('  · ' + ' · '.join(extra)) if extra else '')
