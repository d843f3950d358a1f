"""A real SMTP server for the tests: aiosmtpd on 127.0.0.1, writing every message it accepts
to a folder as `<n>.eml` (written to a temporary name, then renamed, so a reader never sees half
a message). Prints `ready <port>` once it accepts connections, then one JSON line per message
(file, to, subject, message_id, body) as it arrives, so a test waits on a line, never on a
timer. Runs until killed.

    python tests/python/smtp_sink.py FOLDER
"""

import asyncio
import email
import email.policy
import json
import os
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, folder):
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        name = os.path.join(self.folder, f"{self.count:06d}.eml")
        with open(name + ".part", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.replace(name + ".part", name)
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        print(json.dumps({
            "file": name,
            "to": str(msg["To"]),
            "rcpt": envelope.rcpt_tos,
            "subject": str(msg["Subject"]),
            "message_id": str(msg["Message-ID"]),
            "body": body.get_content() if body else "",
        }), flush=True)
        return "250 OK"


def main():
    folder = sys.argv[1]
    os.makedirs(folder, exist_ok=True)
    sink = Sink(folder)
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(lambda: SMTP(sink, hostname="sink.test"), "127.0.0.1", 0)
    )
    port = server.sockets[0].getsockname()[1]
    print(f"ready {port}", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
