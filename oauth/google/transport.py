"""The one HTTP transport to Google: the session, its timeouts, and how Google's errors are read.

Everything that talks to Google goes through :func:`send`: the OAuth endpoints (token, revoke,
userinfo), the heartbeat's API probes and the connectors' Gmail/Calendar client. One pooled session
per process (a forked child starts a fresh one with :func:`session_reset`), one wall-clock deadline
per call, one parser for Google's error bodies, one backoff rule.

A socket timeout bounds each read, not the call: a server that drips a body one byte a second
would hold a refresh (and its row lock) for minutes. :func:`send` therefore streams the body and
gives up when the whole call has taken longer than its deadline (OAUTH_HTTP_TIMEOUT).
"""
from __future__ import annotations

import json as _json
import os
import random
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import requests
from requests.adapters import HTTPAdapter

from ..app_settings import oauth_settings
from ..redaction import redact_text

USER_AGENT = "butlers-oauth/1"
#: Bytes read per step of a streamed body (small enough that a slow body meets the deadline).
_READ_STEP = 64 * 1024


class DeadlineExceeded(requests.Timeout):
    """The whole call (connect, headers and body) took longer than its deadline."""


class EnvCachingSession(requests.Session):
    """A Session that reads the proxy/CA environment once per scheme and host, not on every call.

    ``requests`` re-scans ``os.environ`` for proxy and CA-bundle variables on each request
    (``merge_environment_settings``); with a large environment that is most of a request's CPU,
    which dominates a heartbeat sweep of thousands of refreshes. The environment of a running
    process does not change, so the answer is remembered per (scheme, host).
    """

    def __init__(self) -> None:
        super().__init__()
        self._env_settings: dict[tuple, dict] = {}

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        if proxies or not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, stream, verify, cert)
        settings = self._env_settings.get(key)
        if settings is None:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            self._env_settings[key] = settings
        return {**settings, "proxies": dict(settings["proxies"])}


def new_session() -> EnvCachingSession:
    """A pooled session with enough connections for a heartbeat sweep's fan-out."""
    session = EnvCachingSession()
    adapter = HTTPAdapter(pool_connections=8, pool_maxsize=128)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


session = new_session()
_session_lock = threading.Lock()


def session_reset() -> None:
    """Start this process's pools afresh (a forked child must not share its parent's sockets)."""
    global session
    with _session_lock:
        old, session = session, new_session()
    old.close()
    _pool.clear()


def timeout() -> float:
    """Seconds a whole call to Google may take (OAUTH_HTTP_TIMEOUT)."""
    return float(oauth_settings.OAUTH_HTTP_TIMEOUT)


def endpoint_host(url: str) -> str:
    """``oauth2.googleapis.com`` for a URL: what a failure message names (never a query string)."""
    parts = urlsplit(url or "")
    return parts.netloc.rpartition("@")[2] or url


def send(method: str, url: str, *, deadline: float | None = None, **kwargs) -> requests.Response:
    """One HTTP call with a wall-clock ``deadline`` (default :func:`timeout`) for all of it.

    Raises :class:`requests.RequestException` (:class:`DeadlineExceeded` past the deadline). The
    returned response has its body read and its connection back in the pool. Redirects are never
    followed (a token endpoint that redirects would carry a secret elsewhere).

    The call goes through a lean keep-alive HTTP/1.1 client (:class:`_Conn`; a heartbeat makes
    three calls, and ``requests`` costs about ten times the CPU of each), with the CA bundle requests would
    use (REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE). ``requests`` is used instead when the environment
    names a proxy (which only it honours), or when its adapter has been replaced by a test double
    at the HTTP boundary (``responses``).
    """
    limit = timeout() if deadline is None else float(deadline)
    kwargs.pop("allow_redirects", None)
    if _lean_usable(url):
        return _lean_send(method, url, limit=limit, **kwargs)
    started = time.monotonic()
    response = session.request(
        method, url, timeout=(limit, limit), stream=True, allow_redirects=False, **kwargs
    )
    try:
        chunks = []
        while True:
            # read1: whatever has arrived (up to a step), so a dripped body cannot hold us.
            chunk = response.raw.read1(_READ_STEP, decode_content=True)
            if chunk:
                chunks.append(chunk)
            if time.monotonic() - started > limit:
                raise DeadlineExceeded(
                    f"{method} {endpoint_host(url)} took longer than {limit:g} s"
                )
            if not chunk:
                break
        response._content = b"".join(chunks)
        response._content_consumed = True
    except requests.RequestException:
        response.raw.close()
        raise
    except Exception as exc:  # urllib3's own read errors: a broken or reset body
        response.raw.close()
        raise requests.ConnectionError(f"{type(exc).__name__} reading the answer") from None
    finally:
        response.close()  # body consumed: the connection goes back to the pool
    return response


# --- the lean client ----------------------------------------------------------------------------------
_ORIGINAL_ADAPTER_SEND = HTTPAdapter.send
_PROXY_VARIABLES = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"})
_env_checked: list[bool] = []


def _lean_usable(url: str) -> bool:
    if HTTPAdapter.send is not _ORIGINAL_ADAPTER_SEND:
        return False  # a test double answers at requests' HTTP boundary
    if not _env_checked:
        names = {name.upper() for name in os.environ}
        _env_checked.append(not (names & _PROXY_VARIABLES))
    return _env_checked[0] and url.startswith(("https://", "http://"))


def _dropped(sock) -> bool:
    """An idle keep-alive socket the server closed reads as ready (EOF) before we write."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _BadAnswer(ConnectionError):
    """The server's answer is not HTTP/1.x as we read it."""


class _NoAnswer(_BadAnswer):
    """The server closed (or reset) the connection before the first byte of an answer."""


#: Longest status or header line, most header lines and largest body we accept from a server
#: (http.client's own line and header limits; Google's answers are a few kilobytes).
_MAX_LINE = 65536
_MAX_HEADERS = 100
_MAX_BODY = 16 * 1024 * 1024


class _Conn:
    """One keep-alive HTTP/1.1 connection (plain or TLS).

    The request goes out in one write; the answer is read by its Content-Length, by chunks, or to
    the end of the connection, with the call's deadline checked after every read. That is all a
    JSON API call needs, at a seventh of ``http.client``'s CPU (its headers go through the e-mail
    parser), which a sweep of thousands of refreshes and probes pays three times per credential.
    """

    def __init__(self, scheme: str, host: str, port: int, limit: float, tls) -> None:
        sock = socket.create_connection((host, port), timeout=limit)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "https":
            try:
                sock = tls.wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        self.reader = sock.makefile("rb")
        default = 443 if scheme == "https" else 80
        self.host_header = (f"[{host}]" if ":" in host else host) + (f":{port}" if port != default else "")

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()

    def _line(self) -> bytes:
        line = self.reader.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise _BadAnswer("a line of the answer is too long")
        return line

    def exchange(self, method: str, target: str, headers: dict, body: bytes | None, *,
                 started: float, limit: float, on_sent) -> tuple[int, str, list, bytes, bool]:
        """Send one request, read its answer: (status, reason, headers, body, will_close)."""
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body or b'')}")
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b""))
        on_sent()
        first = True
        while True:  # an interim 1xx answer is followed by the real one
            try:
                status_line = self._line()
            except ConnectionResetError:
                if first:
                    raise _NoAnswer("the server reset the connection without answering") from None
                raise
            if not status_line:
                raise _NoAnswer("the server closed the connection without answering")
            first = False
            version, _, rest = status_line.decode("latin-1").strip().partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/1.") or not code.isdigit() or len(code) != 3:
                raise _BadAnswer("the answer's status line is not HTTP/1.x")
            status = int(code)
            answer_headers, fields = [], {}
            for _ in range(_MAX_HEADERS + 1):
                line = self._line()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, colon, value = line.decode("latin-1").partition(":")
                if not colon:
                    raise _BadAnswer("a header line of the answer has no colon")
                name, value = name.strip(), value.strip()
                answer_headers.append((name, value))
                fields[name.lower()] = value
            else:
                raise _BadAnswer("the answer has too many header lines")
            if not 100 <= status < 200:
                break
        will_close = "close" in fields.get("connection", "").lower() or (
            version == "HTTP/1.0" and "keep-alive" not in fields.get("connection", "").lower()
        )
        if method == "HEAD" or status in (204, 304):
            return status, reason, answer_headers, b"", will_close
        chunks: list[bytes] = []
        received = [0]

        def keep(data: bytes) -> None:
            chunks.append(data)
            received[0] += len(data)
            if received[0] > _MAX_BODY:
                raise _BadAnswer("the answer's body is larger than any Google answer")
            if time.monotonic() - started > limit:
                raise DeadlineExceeded(f"{method} took longer than {limit:g} s")

        if "chunked" in fields.get("transfer-encoding", "").lower():
            while True:
                size_line = self._line().split(b";", 1)[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    raise _BadAnswer("a chunk size of the answer is not a number") from None
                if size == 0:
                    while self._line() not in (b"\r\n", b"\n", b""):
                        pass  # trailer fields
                    break
                self._read_exactly(size, keep)
                self._line()  # the CRLF after the chunk
        elif "content-length" in fields:
            try:
                length = int(fields["content-length"])
            except ValueError:
                raise _BadAnswer("the answer's Content-Length is not a number") from None
            if length < 0:
                raise _BadAnswer("the answer's Content-Length is negative")
            self._read_exactly(length, keep)
        else:  # delimited by the end of the connection
            will_close = True
            while data := self.reader.read1(_READ_STEP):
                keep(data)
        return status, reason, answer_headers, b"".join(chunks), will_close

    def _read_exactly(self, size: int, keep) -> None:
        while size > 0:
            data = self.reader.read1(min(size, _READ_STEP))
            if not data:
                raise _BadAnswer("the server closed the connection in the middle of the answer")
            size -= len(data)
            keep(data)


class _Pool:
    """Idle keep-alive connections per (scheme, host, port); any thread may take one."""

    def __init__(self) -> None:
        self._idle: dict[tuple, list[_Conn]] = {}
        self._lock = threading.Lock()
        self._tls = None

    def take(self, scheme: str, host: str, port: int, limit: float) -> tuple[_Conn, bool]:
        while True:
            with self._lock:  # held for a pop only: sixty threads share it
                idle = self._idle.get((scheme, host, port))
                conn = idle.pop() if idle else None
            if conn is None:
                break
            if _dropped(conn.sock):
                conn.close()  # the server closed it while idle
                continue
            conn.sock.settimeout(limit)
            return conn, True
        if scheme == "https" and self._tls is None:
            # the CA bundle requests would use (its variables, as requests reads them)
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            self._tls = ssl.create_default_context(cafile=bundle or None)
        return _Conn(scheme, host, port, limit, self._tls), False

    def give_back(self, scheme: str, host: str, port: int, conn: _Conn) -> None:
        with self._lock:
            idle = self._idle.setdefault((scheme, host, port), [])
            if len(idle) < 128:
                idle.append(conn)
                return
        conn.close()

    def clear(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


_pool = _Pool()


def _lean_send(method: str, url: str, *, limit: float, params=None, data=None, json=None,
               headers=None) -> requests.Response:
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if params:
        target += ("&" if "?" in target else "?") + urlencode(params)
    body = None
    sent_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if data is not None:
        body = urlencode(data).encode() if isinstance(data, dict) else data
        sent_headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif json is not None:
        body = _json.dumps(json).encode()
        sent_headers["Content-Type"] = "application/json"
    sent_headers.update(headers or {})
    started = time.monotonic()
    for attempt in (1, 2):
        sent = []
        conn = None
        try:
            conn, reused = _pool.take(scheme, host, port, limit)
            status, reason, answer_headers, content, will_close = conn.exchange(
                method, target, sent_headers, body, started=started, limit=limit,
                on_sent=lambda: sent.append(True),
            )
        except DeadlineExceeded:
            if conn is not None:
                conn.close()
            raise DeadlineExceeded(f"{method} {endpoint_host(url)} took longer than {limit:g} s") from None
        except OSError as exc:  # socket errors, timeouts, and an answer we cannot read
            if conn is None:
                reused = False
            else:
                conn.close()
            # A kept-alive connection the server had closed: the request never reached it when
            # sending failed, or (GET only: never resend a refresh) when no answer came at all.
            stale = reused and attempt == 1 and not isinstance(exc, TimeoutError) and (
                not sent or (method == "GET" and isinstance(exc, _NoAnswer))
            )
            if stale:
                continue
            if isinstance(exc, TimeoutError):
                raise requests.Timeout(f"{method} {endpoint_host(url)}: {type(exc).__name__}") from None
            why = str(exc) if isinstance(exc, _BadAnswer) else type(exc).__name__
            raise requests.ConnectionError(f"{method} {endpoint_host(url)}: {why}") from None
        break
    if will_close:
        conn.close()
    else:
        _pool.give_back(scheme, host, port, conn)
    response = requests.Response()
    response.status_code = status
    response.reason = reason
    response.headers = requests.structures.CaseInsensitiveDict(answer_headers)
    response._content = content
    response._content_consumed = True
    response.url = url
    response.encoding = "utf-8"
    return response


@dataclass(frozen=True)
class GoogleError:
    """Google's error answer: a short ``error`` code and a ``description`` (redacted, capped).

    OAuth endpoints answer ``{"error": "invalid_grant", "error_description": "..."}``; the APIs
    answer ``{"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "..."}}``; a 5xx may
    be an HTML page. The code falls back to ``http_<status>``.
    """

    status: int
    error: str
    description: str = ""


def parse_error(response: requests.Response) -> GoogleError:
    """Read Google's error body whatever its shape (see :class:`GoogleError`)."""
    error, description = "", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw = body.get("error")
        if isinstance(raw, str):
            error = raw
            description = str(body.get("error_description") or "")
        elif isinstance(raw, dict):
            error = str(raw.get("status") or raw.get("code") or "")
            description = str(raw.get("message") or "")
    if not error:
        error = f"http_{response.status_code}"
    if not description:
        description = response.reason or f"HTTP {response.status_code}"
    return GoogleError(
        status=response.status_code,
        error=redact_text(error)[:64],
        description=redact_text(description)[:200],
    )


def retry_after(response: requests.Response) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (seconds form; an HTTP date is ignored)."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def backoff(attempt: int, *, base: float, cap: float, asked: float | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): what Google asked for (capped), else
    exponential backoff with jitter: ``base * 2**(attempt-1) * uniform(0.5, 1)``, capped."""
    if asked is not None:
        return min(asked, cap)
    return min(cap, base * (2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
