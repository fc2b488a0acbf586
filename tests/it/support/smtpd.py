#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for stackback's alert tests.

usage: smtpd.py PORTFILE MAILDIR LOG [--starttls CERT KEY] [--smtps CERT KEY] [--auth USER:PASS]

Binds 127.0.0.1 on a port the kernel picks and writes it to PORTFILE (no port race). Messages go
to the Maildir; LOG gets one JSON line per event the tests assert on: the SMTP commands a client
sent (EHLO, STARTTLS, AUTH, MAIL...), authentication results, and failed TLS handshakes.
  --starttls   offer STARTTLS with this certificate (and refuse AUTH before it)
  --smtps      implicit TLS on the whole connection (port 465 style)
  --auth       require AUTH with these credentials (PLAIN or LOGIN)
"""
import asyncio
import json
import os
import ssl
import sys

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP, AuthResult

args = sys.argv[1:]
portfile, maildir, logfile = args[0], args[1], args[2]


def opt(name, n):
    if name not in args:
        return None
    i = args.index(name)
    return args[i + 1:i + 1 + n]


def log(**event):
    with open(logfile, "a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")


def context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


starttls = opt("--starttls", 2)
smtps = opt("--smtps", 2)
auth = opt("--auth", 1)
user, password = auth[0].split(":", 1) if auth else (None, None)


def authenticator(server, session, envelope, mechanism, data):
    ok = data is not None and data.login.decode() == user and data.password.decode() == password
    log(event="auth", mechanism=mechanism, login=data.login.decode() if data else None, ok=ok,
        encrypted=session.ssl is not None)
    # handled=False: aiosmtpd sends the 235 or 535 reply itself.
    return AuthResult(success=ok, handled=False)


class LoggingSMTP(SMTP):
    async def smtp_EHLO(self, hostname):
        log(event="command", command="EHLO", encrypted=self.session.ssl is not None)
        return await super().smtp_EHLO(hostname)

    async def smtp_STARTTLS(self, arg):
        log(event="command", command="STARTTLS")
        return await super().smtp_STARTTLS(arg)

    async def smtp_AUTH(self, arg):
        log(event="command", command="AUTH", encrypted=self.session.ssl is not None)
        return await super().smtp_AUTH(arg)

    async def smtp_MAIL(self, arg):
        log(event="command", command="MAIL", encrypted=self.session.ssl is not None)
        return await super().smtp_MAIL(arg)


def factory():
    kw = {}
    if starttls:
        kw["tls_context"] = context(*starttls)
        kw["require_starttls"] = True
    if auth:
        kw["authenticator"] = authenticator
        kw["auth_required"] = True
        # Plain-text AUTH is allowed only without any TLS offer, to test credentials on a local relay.
        kw["auth_require_tls"] = bool(starttls)
    return LoggingSMTP(Mailbox(maildir), hostname="smtp.test", **kw)


def on_error(loop, context):
    log(event="error", message=str(context.get("exception") or context.get("message")))


async def main():
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(on_error)
    server = await loop.create_server(factory, "127.0.0.1", 0,
                                      ssl=context(*smtps) if smtps else None)
    port = server.sockets[0].getsockname()[1]
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, portfile)
    await server.serve_forever()


asyncio.run(main())
