"""A real SMTP server for the tests (aiosmtpd), on a port of its own choosing.

Prints `smtp listening on PORT`, then one JSON line per message accepted:
{"from": ..., "to": [...], "data": "..."}. A line `down` on stdin makes it answer every
recipient with 421 (service not available, as a relay that is down), `up` undoes it.
"""

import json
import sys
import threading

from aiosmtpd.controller import Controller

state = {"down": False}


class Sink:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if state["down"]:
            return "421 4.3.2 Service not available, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        line = json.dumps(
            {
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "data": envelope.content.decode("utf8", errors="replace"),
            }
        )
        print(line, flush=True)
        return "250 Message accepted for delivery"


class PortZero(Controller):
    """Binds port 0 and learns the port the system gave before checking it answers."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def main():
    controller = PortZero(Sink(), hostname="127.0.0.1", port=0)
    controller.start()
    print(f"smtp listening on {controller.port}", flush=True)
    for command in sys.stdin:
        command = command.strip()
        if command == "down":
            state["down"] = True
        elif command == "up":
            state["down"] = False
        print(f"ack {command}", flush=True)
    controller.stop()


if __name__ == "__main__":
    main()
