"""The admin login of the study app: HTTP Basic, UTF-8, constant-time, throttled.

Credentials (RFC 7617): ``Authorization: Basic base64(user ":" password)``, decoded as UTF-8 (the
challenge says ``charset="UTF-8"``) and normalised to NFC, as RFC 8265's OpaqueString profile
prescribes for passwords, so a password with non-ASCII characters works whichever Unicode form
the browser sends. The user is ``admin``; user and password are compared as SHA-256 digests with
:func:`hmac.compare_digest` (constant time, and the length of the password does not leak).

Failed attempts are throttled (:class:`AdminGuard`, policy :class:`ThrottlePolicy`):

* per client (its IP address): ``free_failures`` wrong passwords are answered at once; after that
  each failure locks the client for ``base_delay_s``, doubling up to ``max_delay_s``. While it is
  locked its requests get 429 with ``Retry-After`` and the password is not even checked, so a
  lock cannot be raced. A client's failures are forgotten after ``forget_after_s`` without one,
  or at its next successful login.
* globally: all clients together may fail ``global_burst`` times, refilled at
  ``global_per_minute`` (a token bucket), which bounds a guesser who spreads over many addresses.
* so that an attacker cannot lock the real admin out (by failing from everywhere, or from the
  admin's own network), a successful login sets an HMAC-signed *device cookie* (the "device
  cookie" scheme of Openwall, also OWASP's advice): a request that carries a valid one is
  throttled only by the failures made with that cookie, never by the per-address or global
  counters. An admin who has logged in once from a browser keeps access during an attack; a
  browser never used before may have to wait for the global bucket (``Retry-After`` says how
  long); the shell commands (``copymark study export``/``analyze``) need no login at all.

All decisions are taken under one lock, together with the (microsecond) password check, so
concurrent requests cannot exceed the limits. State is in memory and bounded (``max_clients``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from copymark.config import StrictModel

ADMIN_USER = "admin"
REALM = "copymark study admin"
CHALLENGE = f'Basic realm="{REALM}", charset="UTF-8"'
DEVICE_COOKIE = "copymark_admin_device"
DEVICE_MAX_AGE_S = 90 * 24 * 3600


class ThrottlePolicy(StrictModel):
    """Limits on failed admin logins (see the module docstring)."""

    free_failures: int = Field(default=5, ge=1)
    base_delay_s: float = Field(default=1.0, gt=0)
    max_delay_s: float = Field(default=300.0, gt=0)
    forget_after_s: float = Field(default=3600.0, gt=0)
    global_burst: int = Field(default=20, ge=1)
    global_per_minute: float = Field(default=10.0, gt=0)
    max_clients: int = Field(default=10_000, ge=1)


def _nfc_bytes(text: str) -> bytes:
    return unicodedata.normalize("NFC", text).encode("utf-8")


def parse_basic(authorization: str | None) -> tuple[str, str] | None:
    """``(user, password)`` of an ``Authorization: Basic`` header, ``None`` if there is none.

    Raises :class:`ValueError` for a Basic header that is not base64 of UTF-8 ``user:password``.
    """
    if not authorization:
        return None
    scheme, _, param = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(param.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("credentials are not base64 of UTF-8 text") from None
    user, sep, password = text.partition(":")
    if not sep:
        raise ValueError("credentials have no ':' between user and password")
    return user, password


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


@dataclass(frozen=True)
class Verdict:
    """What to answer: ``ok`` (200; ``set_device`` is a cookie value to set, if any), ``challenge``
    (401, no credentials sent), ``wrong`` (401), or ``locked`` (429 after ``retry_after`` s)."""

    outcome: Literal["ok", "challenge", "wrong", "locked"]
    retry_after: int = 0
    set_device: str | None = None


class AdminGuard:
    """Checks admin credentials and throttles failures (thread-safe)."""

    def __init__(
        self,
        password: str,
        secret: bytes,
        policy: ThrottlePolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.policy = policy or ThrottlePolicy()
        self._clock = clock
        self._user = hashlib.sha256(_nfc_bytes(ADMIN_USER)).digest()
        self._password = hashlib.sha256(_nfc_bytes(password)).digest()
        # device cookies are signed with a key bound to the password: a new password revokes them
        self._device_key = hmac.new(secret, b"admin-device:" + self._password, hashlib.sha256).digest()
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._tokens = float(self.policy.global_burst)
        self._refilled = clock()
        self._lock = threading.Lock()

    # -- device cookies ---------------------------------------------------------------------
    def _sign(self, device: str) -> str:
        return hmac.new(self._device_key, device.encode(), hashlib.sha256).hexdigest()[:32]

    def _new_device(self) -> str:
        device = secrets.token_hex(16)
        return f"{device}.{self._sign(device)}"

    def _device(self, cookie: str | None) -> str | None:
        if not cookie or len(cookie) > 100:
            return None
        device, _, sig = cookie.partition(".")
        return device if hmac.compare_digest(sig.encode(), self._sign(device).encode()) else None

    # -- credentials ------------------------------------------------------------------------
    def _matches(self, user: str, password: str) -> bool:
        user_ok = hmac.compare_digest(hashlib.sha256(_nfc_bytes(user)).digest(), self._user)
        pass_ok = hmac.compare_digest(hashlib.sha256(_nfc_bytes(password)).digest(), self._password)
        return user_ok & pass_ok

    # -- throttle ---------------------------------------------------------------------------
    def _refill(self, now: float) -> None:
        rate = self.policy.global_per_minute / 60.0
        self._tokens = min(float(self.policy.global_burst), self._tokens + (now - self._refilled) * rate)
        self._refilled = now

    def _record(self, key: str, now: float) -> _Record | None:
        rec = self._records.get(key)
        if rec is not None and now - rec.last_failure > self.policy.forget_after_s and now >= rec.locked_until:
            del self._records[key]
            return None
        return rec

    def _fail(self, key: str, now: float, rec: _Record | None) -> None:
        if rec is None:
            rec = self._records[key] = _Record()
            while len(self._records) > self.policy.max_clients:
                self._records.popitem(last=False)
        self._records.move_to_end(key)
        rec.failures += 1
        rec.last_failure = now
        if rec.failures >= self.policy.free_failures:
            extra = rec.failures - self.policy.free_failures
            rec.locked_until = now + min(self.policy.max_delay_s, self.policy.base_delay_s * 2.0 ** min(extra, 60))

    def check(self, authorization: str | None, client: str, device_cookie: str | None = None) -> Verdict:
        """Decide one admin request from ``client`` (an address) with its headers."""
        with self._lock:
            now = self._clock()
            device = self._device(device_cookie)
            try:
                creds = parse_basic(authorization)
            except ValueError:
                creds = ("", "")  # malformed credentials count as a wrong password
            if creds is None:
                return Verdict("challenge")
            key = f"device:{device}" if device else f"client:{client}"
            rec = self._record(key, now)
            if rec is not None and now < rec.locked_until:
                return Verdict("locked", retry_after=max(1, math.ceil(rec.locked_until - now)))
            if device is None:
                self._refill(now)
                if self._tokens < 1.0:
                    wait = (1.0 - self._tokens) / (self.policy.global_per_minute / 60.0)
                    return Verdict("locked", retry_after=max(1, math.ceil(wait)))
            if self._matches(*creds):
                self._records.pop(key, None)
                return Verdict("ok", set_device=None if device else self._new_device())
            self._fail(key, now, rec)
            if device is None:
                self._tokens -= 1.0
            return Verdict("wrong")
