"""Webhook delivery: signed (Standard Webhooks), durable, retried, bounded, and SSRF-checked.

A job's changes schedule deliveries inside the store (``events.schedule_deliveries``), so the
delivery log is part of the job record and survives restarts. ``WebhookSender`` threads, in
every replica, lease due deliveries from the store (``JobStore.claim_delivery``) the way
workers lease jobs, POST them and record the outcome: delivered (2xx), retried after a
doubling delay (``STABLE_AUDIO_WEBHOOK_RETRY_SECONDS``, at most an hour), or failed after
``STABLE_AUDIO_WEBHOOK_MAX_ATTEMPTS``. A sender that dies mid-attempt leaves the lease to
expire and the delivery is sent again, with the same ``webhook-id``: delivery is at least
once, and receivers drop repeats by that id. The senders never touch the job worker's threads.

Each attempt is one POST of ``{"type": "job.<event>", "timestamp": ..., "data": <job record>}``
(the record as it is when sent) with ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature`` headers, signed with ``STABLE_AUDIO_WEBHOOK_SECRET`` by the
``standardwebhooks`` package. Redirects are not followed; at most ``MAX_RESPONSE_BYTES`` of an
answer is read, and each attempt is bounded by ``STABLE_AUDIO_WEBHOOK_TIMEOUT``.

Targets must be http(s) URLs whose host resolves only to public addresses: loopback,
private, link-local, multicast and reserved ones are refused (at submit, and again before
every attempt, since DNS answers change), unless the host is listed in
``STABLE_AUDIO_WEBHOOK_ALLOW_HOSTS``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

from ..errors import InvalidRequestError
from .records import Job, WebhookDelivery
from .store import JobStore

logger = logging.getLogger(__name__)

MAX_URL_CHARS = 2048
MAX_BODY_BYTES = 256 * 1024  # a record larger than this is sent slim (its links and status)
MAX_RESPONSE_BYTES = 4096
MAX_RETRY_SECONDS = 3600.0
USER_AGENT = "stable-audio-bento-webhooks"


def check_webhook_url(url: str, allow_hosts: list[str], field: str = "webhook") -> None:
    """Raise InvalidRequestError (naming ``field``) unless ``url`` is an http(s) URL to a
    public host, or to a host in ``allow_hosts``."""

    def refuse(reason: str) -> InvalidRequestError:
        return InvalidRequestError(f"`{field}` {reason}.", field=field)

    if len(url) > MAX_URL_CHARS:
        raise refuse(f"is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise refuse(f"is not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise refuse("must be an http:// or https:// URL")
    host = parts.hostname
    if not host:
        raise refuse("has no host")
    if parts.username is not None or parts.password is not None:
        raise refuse("must not carry credentials")
    if host in allow_hosts:
        return
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80))
    except (OSError, UnicodeError):
        raise refuse(f"has a host that does not resolve ({host})") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not _public(address):
            raise refuse(
                f"resolves to a non-public address ({address}); the server calls only public "
                "hosts unless STABLE_AUDIO_WEBHOOK_ALLOW_HOSTS lists this one"
            )


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def retry_delay(attempts: int, base: float) -> float:
    """The wait before the next attempt, after ``attempts`` failed ones: base, 2x, 4x, ..."""
    return float(min(base * 2 ** max(0, attempts - 1), MAX_RETRY_SECONDS))


def delivery_body(job: Job, delivery: WebhookDelivery, record: dict[str, Any]) -> str:
    """The JSON body of an attempt (bounded: a record too large is cut to its essentials)."""
    when = datetime.fromtimestamp(delivery.created_at, UTC).isoformat()
    body = json.dumps({"type": f"job.{delivery.event}", "timestamp": when, "data": record})
    if len(body.encode()) <= MAX_BODY_BYTES:
        return body
    slim = {k: record.get(k) for k in ("id", "status", "status_url", "download_url", "error")}
    return json.dumps({"type": f"job.{delivery.event}", "timestamp": when, "data": slim})


class WebhookSender:
    """Threads that send due webhook deliveries until ``stop()``."""

    def __init__(
        self,
        store: JobStore,
        secret: str,
        render: Callable[[Job], dict[str, Any]],
        *,
        allow_hosts: list[str] | None = None,
        timeout: float = 10.0,
        max_attempts: int = 8,
        retry_seconds: float = 5.0,
        threads: int = 4,
        poll_interval: float = 0.5,
        sender_id: str | None = None,
    ) -> None:
        self.store = store
        self.webhook = Webhook(secret)
        self.render = render
        self.allow_hosts = list(allow_hosts or [])
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.retry_seconds = retry_seconds
        self.threads = threads
        self.poll_interval = poll_interval
        self.sender_id = sender_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        # Held past the longest attempt, so an attempt under way is never sent twice at once.
        self.lease_seconds = 3 * timeout + 5
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stopping.clear()
        for i in range(self.threads):
            thread = threading.Thread(
                target=self._loop, args=(f"{self.sender_id}/{i}",), name=f"webhooks-{i}"
            )
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking deliveries; one under way is left to its lease (sent again later)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def _loop(self, sender: str) -> None:
        with httpx.Client(
            timeout=self.timeout, follow_redirects=False, headers={"user-agent": USER_AGENT}
        ) as client:
            while not self._stopping.is_set():
                try:
                    claimed = self.store.claim_delivery(sender, self.lease_seconds)
                except Exception:
                    logger.exception("Claiming a webhook delivery failed")
                    claimed = None
                if claimed is None:
                    self._stopping.wait(self.poll_interval)
                    continue
                try:
                    self.send(client, sender, *claimed)
                except Exception:
                    # The store failed to record it: the lease expires and it is sent again.
                    logger.exception("Recording a webhook delivery failed")

    def send(self, client: httpx.Client, sender: str, job: Job, delivery: WebhookDelivery) -> None:
        """One attempt of ``delivery``, and its outcome recorded."""
        ok, status, error = self._attempt(client, job, delivery)
        retry_in: float | None = None
        if not ok and delivery.attempts < self.max_attempts and status != -1:
            retry_in = retry_delay(delivery.attempts, self.retry_seconds)
        if ok:
            outcome = "delivered"
        else:
            outcome = f"{error}; " + (f"retry in {retry_in:.0f} s" if retry_in else "gave up")
        logger.log(
            logging.INFO if ok else logging.WARNING,
            "Webhook %s (%s of job %s), attempt %d: %s",
            delivery.id,
            delivery.event,
            job.id,
            delivery.attempts,
            outcome,
        )
        self.store.finish_delivery(
            job.id,
            delivery.id,
            sender,
            ok=ok,
            response_status=status if status and status > 0 else None,
            error=error,
            retry_in=retry_in,
        )

    def _attempt(
        self, client: httpx.Client, job: Job, delivery: WebhookDelivery
    ) -> tuple[bool, int | None, str | None]:
        """(delivered, HTTP status or -1 for "never retry", error)."""
        url = job.webhook
        if url is None:
            return False, -1, "the job has no webhook"
        try:
            check_webhook_url(url, self.allow_hosts)
        except InvalidRequestError as e:
            return False, -1, e.message
        body = delivery_body(job, delivery, self.render(job))
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.webhook.sign(delivery.id, now, body),
        }
        try:
            with client.stream("POST", url, content=body.encode(), headers=headers) as response:
                received = 0
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received >= MAX_RESPONSE_BYTES:
                        break
                status = response.status_code
        except httpx.TimeoutException:
            return False, None, f"no answer within {self.timeout:g} s"
        except httpx.HTTPError as e:
            return False, None, f"{type(e).__name__}: {e}"[:300]
        if 200 <= status < 300:
            return True, status, None
        return False, status, f"HTTP {status}"
