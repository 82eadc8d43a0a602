"""``smtp://[user:pass@]host[:port]?from=a@x&to=b@y,c@z`` and ``smtps://``
(TLS from the first byte). Plain smtp:// upgrades with STARTTLS whenever the
server offers it; certificates are verified (``cafile=`` for a private CA).
One message per alert; its Message-ID is derived from the alert id, the
idempotency key of mail. With ``digest=SECONDS`` warnings and
info alerts are collected per window into one message (critical ones never
wait); the database makes them due together, see _relay_first_due.

aiosmtplib, so the relay's deadline cancels a session wherever it hangs
(connect, greeting, AUTH, DATA)."""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import formatdate
from urllib.parse import unquote

import aiosmtplib

from orchestrator.alerts import Alert
from orchestrator.errors import GuardError
from orchestrator.relay.base import PermanentError, Sink, SinkURL, TransientError


class EmailSink(Sink):
    def __init__(self, url: SinkURL) -> None:
        super().__init__(url)
        url.require_host()
        opts = dict(url.query)
        self.sender = opts.get("from", "").strip()
        self.recipients = [a.strip() for a in opts.get("to", "").split(",") if a.strip()]
        if not self.sender or "@" not in self.sender:
            raise GuardError(f"invalid sink URL {url.name}: from=ADDRESS is required")
        if not self.recipients or any("@" not in a for a in self.recipients):
            raise GuardError(f"invalid sink URL {url.name}: to=ADDRESS[,ADDRESS] is required")
        self.tls = url.scheme == "smtps"
        self.port = url.port or (465 if self.tls else 25)
        self.user = unquote(url.parts.username or "")
        self.password = unquote(url.parts.password or "")
        self.cafile = opts.get("cafile") or None

    def message(self, alert: Alert) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = f"[{alert.severity.upper()}] {alert.alert_type} on {alert.entity}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = f"<alert-{alert.id}@consistency-guard>"
        msg["X-Idempotency-Key"] = alert.idempotency_key
        lines = [alert.description or "(no description)", "",
                 f"severity: {alert.severity}", f"type: {alert.alert_type}",
                 f"entity: {alert.entity}", f"detected: {alert.detected_at.isoformat()}",
                 f"alert id: {alert.id}"]
        if self.url.dashboard_url:
            lines.append(f"dashboard: {self.url.dashboard_url}")
        msg.set_content("\n".join(lines) + "\n")
        return msg

    def digest_message(self, alerts: list[Alert]) -> EmailMessage:
        ids = [a.id for a in alerts]
        counts = {s: sum(a.severity == s for a in alerts) for s in ("warning", "info")}
        msg = EmailMessage()
        msg["Subject"] = (f"[DIGEST] {len(alerts)} alert(s): "
                          + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = f"<digest-{min(ids)}-{max(ids)}-{len(ids)}@consistency-guard>"
        msg["X-Idempotency-Key"] = ",".join(map(str, ids))
        lines = [f"#{a.id} {a.severity} {a.alert_type} on {a.entity} at "
                 f"{a.detected_at.isoformat()}: {a.description}" for a in alerts]
        if self.url.dashboard_url:
            lines += ["", f"dashboard: {self.url.dashboard_url}"]
        msg.set_content("\n".join(lines) + "\n")
        return msg

    async def send(self, alert: Alert) -> None:
        await self._deliver(self.message(alert))

    async def send_digest(self, alerts: list[Alert]) -> None:
        await self._deliver(self.digest_message(alerts))

    async def _deliver(self, message: EmailMessage) -> None:
        context = ssl.create_default_context(cafile=self.cafile)
        smtp = aiosmtplib.SMTP(hostname=self.url.host, port=self.port, use_tls=self.tls,
                               start_tls=None if not self.tls else False, tls_context=context,
                               timeout=None)
        try:
            async with smtp:
                if self.user:
                    await smtp.login(self.user, self.password)
                await smtp.send_message(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = sorted({r.code for r in exc.recipients})
            error = f"recipients refused: {codes}"
            if all(400 <= c < 500 for c in codes):
                raise TransientError(error) from None
            raise PermanentError(error) from None
        except aiosmtplib.SMTPResponseException as exc:
            error = f"SMTP {exc.code}: {exc.message}"
            if 400 <= exc.code < 500:
                raise TransientError(error) from None
            raise PermanentError(error) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientError(f"SMTP connection error: {exc.__class__.__name__}: {exc}") \
                from None
