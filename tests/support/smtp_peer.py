"""A scriptable SMTP server for the outbound delivery tests (aiosmtpd on loopback).

Usage: python3 smtp_peer.py SCRIPT.json

The script (all keys optional but "log"):
  host          address to bind, default "127.0.0.1"
  port          port to bind, default 0 (the kernel chooses)
  log           file that receives one JSON object a line for every AUTH attempt
                ({"event": "auth", ...}) and every accepted message ({"event": "message", ...})
  hostname      name in the greeting and EHLO reply, default "peer.test"
  tls_cert, tls_key
                PEM files: STARTTLS is offered with them
  require_tls   refuse MAIL before STARTTLS (530)
  auth          {"user": U, "password": P}: AUTH PLAIN and LOGIN are offered (over TLS when
                tls_cert is given, else in plain text) and required before MAIL; wrong
                credentials get 535
  mail, rcpt, data
                replies for successive MAIL commands / RCPT commands / ends of DATA, e.g.
                ["451 4.3.0 Try again later", "451 4.3.0 Try again later"]: the first two get
                451, the rest the normal reply. null in the list: the normal reply.
  rcpt_by_address
                {"bob@peer.test": "550 5.1.1 No such user"}: a fixed reply for a recipient

It prints "port N" on standard output once it listens and stops when standard input closes,
so it never outlives the test process.
"""

import asyncio
import hashlib
import json
import re
import ssl
import sys
import threading

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError:
    print("aiosmtpd is not installed: pip install aiosmtpd", file=sys.stderr)
    sys.exit(3)


def main():
    with open(sys.argv[1]) as f:
        script = json.load(f)
    log_path = script["log"]
    log_lock = threading.Lock()

    def log(event):
        with log_lock, open(log_path, "a") as out:
            out.write(json.dumps(event) + "\n")

    queues = {k: list(script.get(k) or []) for k in ("mail", "rcpt", "data")}
    by_address = {k.lower(): v for k, v in (script.get("rcpt_by_address") or {}).items()}

    def scripted(kind):
        q = queues[kind]
        return q.pop(0) if q else None

    class Handler:
        async def handle_MAIL(self, server, session, envelope, address, mail_options):
            reply = scripted("mail")
            if reply:
                return reply
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            return "250 2.1.0 Sender OK"

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            reply = by_address.get(address.lower()) or scripted("rcpt")
            if reply:
                return reply
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            return "250 2.1.5 Recipient OK"

        async def handle_DATA(self, server, session, envelope):
            reply = scripted("data")
            if reply:
                return reply
            content = envelope.original_content or b""
            header_end = content.find(b"\r\n\r\n")
            headers = content[: header_end if header_end >= 0 else len(content)]
            m = re.search(rb"(?im)^message-id:[ \t]*(.*(?:\r\n[ \t].*)*)", headers)
            message_id = m.group(1).decode("ascii", "replace").strip() if m else None
            digest = hashlib.sha256(content).hexdigest()
            log(
                {
                    "event": "message",
                    # aiosmtpd hands the null reverse-path over as "<>"; logged as "".
                    "mail_from": "" if envelope.mail_from == "<>" else envelope.mail_from,
                    "rcpt_to": envelope.rcpt_tos,
                    "mail_options": envelope.mail_options,
                    "size": len(content),
                    "message_id": message_id,
                    "sha256": digest,
                    "tls": session.ssl is not None,
                    "auth_user": (
                        session.auth_data.login.decode("utf-8", "replace")
                        if isinstance(session.auth_data, LoginPassword)
                        else None
                    ),
                }
            )
            return "250 2.0.0 Ok: queued as %s" % digest[:12].upper()

    auth = script.get("auth")

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = False
        user = None
        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode("utf-8", "replace")
            ok = (
                auth is not None
                and auth_data.login == auth["user"].encode()
                and auth_data.password == auth["password"].encode()
            )
        log(
            {
                "event": "auth",
                "mechanism": mechanism,
                "user": user,
                "success": ok,
                "tls": session.ssl is not None,
            }
        )
        # handled=False: aiosmtpd sends 235 or 535 itself.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    tls_context = None
    if script.get("tls_cert"):
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(script["tls_cert"], script["tls_key"])

    def factory():
        return SMTP(
            Handler(),
            hostname=script.get("hostname", "peer.test"),
            ident="smtp_peer",
            tls_context=tls_context,
            require_starttls=bool(script.get("require_tls")),
            auth_required=auth is not None,
            auth_require_tls=tls_context is not None,
            # Always ours, so that every AUTH attempt is logged (without "auth" all fail).
            authenticator=authenticator,
            timeout=60,
        )

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(factory, host=script.get("host", "127.0.0.1"), port=script.get("port", 0))
    )
    port = server.sockets[0].getsockname()[1]
    print("port %d" % port, flush=True)

    def wait_for_stdin_close():
        sys.stdin.read()
        loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=wait_for_stdin_close, daemon=True).start()
    loop.run_forever()


if __name__ == "__main__":
    main()
