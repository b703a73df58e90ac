"""Atlas desktop task board: a Qt (qtpy) client of the Atlas Realtime API with offline-first edits.

Modules: api (HTTP task routes), realtime (the WebSocket in a worker thread), store (confirmed
state and the pending layer), queue (the offline queue and the state file), ui (the window),
__main__ (the command line).
"""

__all__ = ['api', 'realtime', 'store', 'queue']
