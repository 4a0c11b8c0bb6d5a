"""Starts localstripe for callgate's tests: on 127.0.0.1, on a free port, in memory only.

localstripe differs from Stripe in known ways; this launcher adapts the ones callgate's
requests meet, so callgate's own client never special-cases the fake:
- it rejects parameters real Stripe accepts on PaymentIntents (setup_future_usage,
  automatic_payment_methods, description, receipt_email): accept and keep them;
- it pickles its state to /tmp after each write (parallel instances would share it): don't.

Prints "localstripe listening on PORT" once it accepts connections; exits when stdin closes.
"""

import asyncio
import os
import socket
import sys
import threading

from aiohttp import web
from localstripe import resources, server

resources.store.dump_to_disk = lambda *args, **kwargs: None

_original_init = resources.PaymentIntent.__init__


def _init(self, *args, setup_future_usage=None, automatic_payment_methods=None,
          description=None, receipt_email=None, **kwargs):
    _original_init(self, *args, **kwargs)
    self.setup_future_usage = setup_future_usage
    self.automatic_payment_methods = automatic_payment_methods
    self.description = description
    self.receipt_email = receipt_email


resources.PaymentIntent.__init__ = _init


def _exit_with_parent():
    sys.stdin.read()
    os._exit(0)


def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    threading.Thread(target=_exit_with_parent, daemon=True).start()

    async def serve():
        runner = web.AppRunner(server.app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        # Announced only once connections are accepted.
        print(f"localstripe listening on {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
