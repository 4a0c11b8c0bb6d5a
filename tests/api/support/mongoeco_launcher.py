"""Starts mongoeco, a MongoDB wire-protocol server over SQLite, for callgate's tests: on
127.0.0.1, a free port, data in the given folder. Prints "mongoeco listening on PORT" once it
accepts connections; exits when stdin closes (the test process is gone).

(Needs pymongo beside mongoeco for its `bson` module; scripts/test installs both.)

One adaptation, where mongoeco differs from MongoDB: MongoDB always sends a cursor's id as a
64-bit integer; mongoeco sends small ids (0) as 32-bit, which the official Rust driver rejects.
The launcher makes them 64-bit, as MongoDB does. callgate's own code is not told about it.

A second, a safety net: MongoDB makes every acknowledged write visible to every later read.
mongoeco writes through one SQLite connection and reads lists through separate ones, each
seeing only what that connection committed; were a write ever left inside an open transaction
after it was acknowledged, single-document reads (on the writing connection) would find it and
list reads would not, for every database on that server at once, which is what two CI runs saw
(stops 33 and 34). After each engine job the launcher commits any transaction still open on the
writing connection that no session owns, and says so on stderr ("mongoeco: ... committed"), so
a run shows whether it ever happened.
"""

import asyncio
import os
import sys
import threading

from bson.int64 import Int64
from mongoeco.engines.sqlite import SQLiteEngine
from mongoeco.wire import AsyncMongoEcoProxyServer
from mongoeco.wire.cursors import WireCursorStore


def _int64_cursor_ids(method):
    def wrapper(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        cursor = result.get("cursor") if isinstance(result, dict) else None
        if isinstance(cursor, dict) and isinstance(cursor.get("id"), int):
            cursor["id"] = Int64(cursor["id"])
        return result

    return wrapper


WireCursorStore.materialize_command_result = _int64_cursor_ids(WireCursorStore.materialize_command_result)
WireCursorStore.get_more = _int64_cursor_ids(WireCursorStore.get_more)


def _commit_stray_transaction(engine, job):
    conn = engine._connection
    if conn is None or not conn.in_transaction or engine._transaction_owner_session_id is not None:
        return
    state = engine._session_runtime._write_states.get(conn)
    if state is not None and state.frames:
        return  # a write scope still open: not ours to end
    name = getattr(job, "__qualname__", None) or getattr(getattr(job, "func", None), "__qualname__", repr(job))
    print(f"mongoeco: a transaction was left open after {name}; committed", file=sys.stderr, flush=True)
    conn.commit()


_run_blocking = SQLiteEngine._run_blocking


async def _run_blocking_committed(self, func, /, *args, **kwargs):
    def job(*a, **k):
        try:
            return func(*a, **k)
        finally:
            _commit_stray_transaction(self, func)

    return await _run_blocking(self, job, *args, **kwargs)


SQLiteEngine._run_blocking = _run_blocking_committed


def _exit_with_parent():
    sys.stdin.read()
    os._exit(0)


async def main(folder):
    server = AsyncMongoEcoProxyServer(
        engine=SQLiteEngine(os.path.join(folder, "mongoeco.db"), executor_workers=1), host="127.0.0.1", port=0
    )
    address = await server.start()
    print(f"mongoeco listening on {address.port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    asyncio.run(main(sys.argv[1]))
