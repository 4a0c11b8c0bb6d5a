"""Starts mongoeco, a MongoDB wire-protocol server over SQLite, for callgate's tests: on
127.0.0.1, a free port, data in the given folder. Prints "mongoeco listening on PORT" once it
accepts connections; exits when stdin closes (the test process is gone).

(Needs pymongo beside mongoeco for its `bson` module; scripts/test installs both.)

One adaptation, where mongoeco differs from MongoDB: MongoDB always sends a cursor's id as a
64-bit integer; mongoeco sends small ids (0) as 32-bit, which the official Rust driver rejects.
The launcher makes them 64-bit, as MongoDB does. callgate's own code is not told about it.
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
