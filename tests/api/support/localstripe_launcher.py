"""Starts localstripe for callgate's tests: on 127.0.0.1, on a free port, in memory only.

localstripe differs from Stripe in known ways; this launcher adapts the ones callgate's
requests meet, so callgate's own client never special-cases the fake:
- it rejects parameters real Stripe accepts on PaymentIntents (setup_future_usage,
  automatic_payment_methods, description, receipt_email): accept and keep them;
- it pickles its state to /tmp after each write (parallel instances would share it): don't;
- refunds: it refunds a charge again and again, ignores `Idempotency-Key` and sends no
  `charge.refunded`. Stripe refuses a refund beyond what is left of the charge
  (`charge_already_refunded`), answers a repeated key with the first answer, and sends
  `charge.refunded` (with `refunded` and `amount_refunded`) for each refund: do so.

Prints "localstripe listening on PORT" once it accepts connections; exits when stdin closes.
"""

import asyncio
import os
import socket
import sys
import threading

from aiohttp import web
from localstripe import resources, server
from localstripe.errors import UserError
from localstripe.webhooks import schedule_webhook

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

_original_refund_init = resources.Refund.__init__


def _refund_init(self, charge=None, payment_intent=None, amount=None, **kwargs):
    target = charge
    if payment_intent is not None and charge is None:
        target = resources.PaymentIntent._api_retrieve(payment_intent).latest_charge.id
    if target is not None:
        charge_obj = resources.Charge._api_retrieve(target)
        wanted = int(amount) if amount is not None else charge_obj.amount - charge_obj.amount_refunded
        if wanted <= 0 or charge_obj.amount_refunded + wanted > charge_obj.amount:
            raise UserError(400, f"Charge {target} has already been refunded.",
                            {"code": "charge_already_refunded"})
    _original_refund_init(self, charge=charge, payment_intent=payment_intent,
                          amount=amount, **kwargs)
    charge_obj = resources.Charge._api_retrieve(self.charge)
    event = resources.Event('charge.refunded', charge_obj)
    obj = event.data['object']
    obj['refunded'] = charge_obj.refunded
    obj['amount_refunded'] = charge_obj.amount_refunded
    if not obj.get('payment_intent') and payment_intent is not None:
        obj['payment_intent'] = payment_intent
    schedule_webhook(event)


resources.Refund.__init__ = _refund_init

# Stripe answers a repeated Idempotency-Key with the first answer (for 24 hours). Kept to
# refunds here: the other tests were written against a fake that ignores keys.
_answered = {}


@web.middleware
async def _idempotent(request, handler):
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or request.path != "/v1/refunds" or not key:
        return await handler(request)
    if key in _answered:
        status, body = _answered[key]
        return web.Response(status=status, body=body, content_type="application/json")
    response = await handler(request)
    if response.status < 500:
        _answered[key] = (response.status, response.body)
    return response


server.app.middlewares.append(_idempotent)


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
