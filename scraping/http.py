"""A polite, guarded HTTP client for the scraper.

One ``requests.Session`` per worker process (``get_fetcher``). Every request:
- goes only to http(s) hosts that resolve to public addresses, unless the host is listed in
  ``SCRAPER_ALLOWED_PRIVATE_HOSTS``, and connects to the very address that was checked (a second
  DNS answer can not swap in a private one); redirects are followed by hand so each hop is checked
  again *before* any connection is made to it;
- obeys robots.txt (fetched through this same client, cached per host);
- waits for the per-host rate limit (and a longer robots.txt Crawl-delay);
- retries connection errors, timeouts, 429 and 5xx with exponential backoff, honouring Retry-After;
- sends If-None-Match / If-Modified-Since when given validators (304 → ``not_modified``);
- streams the body and stops at a size cap and at a total deadline per download.
Failures raise ``FetchError`` with a short code and a message a curator can read.
"""

import email.utils
import ipaddress
import logging
import os
import re
import socket
import threading
import time
import urllib.robotparser
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class FetchError(Exception):
    """A URL could not be fetched; ``code`` is machine-readable, the message is for people."""

    def __init__(self, message: str, *, code: str, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.url = url
        self.status = status


@dataclass(frozen=True)
class FetcherConfig:
    user_agent: str = "carsite-scraper/1.0"
    rate_per_host: float = 1.0  # requests per second; 0 lifts the limit
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff_base: float = 1.0
    retry_after_max: float = 120.0
    max_page_bytes: int = 5 * 1024 * 1024
    max_redirects: int = 5
    download_deadline: float = 120.0  # seconds from sending a request to its last body byte, checked as it arrives
    allowed_private_hosts: tuple[str, ...] = ()
    obey_robots: bool = True
    robots_cache_seconds: float = 3600.0
    shared_rate_limit_url: str = ""  # Redis URL: one rate limit per host across all worker processes


def config_from_settings() -> FetcherConfig:
    from django.conf import settings

    return FetcherConfig(
        user_agent=settings.SCRAPER_USER_AGENT,
        rate_per_host=settings.SCRAPER_RATE_PER_HOST,
        connect_timeout=settings.SCRAPER_CONNECT_TIMEOUT,
        read_timeout=settings.SCRAPER_READ_TIMEOUT,
        retries=settings.SCRAPER_RETRIES,
        backoff_base=settings.SCRAPER_BACKOFF_BASE,
        retry_after_max=settings.SCRAPER_RETRY_AFTER_MAX,
        max_page_bytes=settings.SCRAPER_MAX_PAGE_BYTES,
        max_redirects=settings.SCRAPER_MAX_REDIRECTS,
        download_deadline=settings.SCRAPER_DOWNLOAD_DEADLINE,
        allowed_private_hosts=tuple(h.lower() for h in settings.SCRAPER_ALLOWED_PRIVATE_HOSTS),
        obey_robots=settings.SCRAPER_OBEY_ROBOTS,
        robots_cache_seconds=settings.SCRAPER_ROBOTS_CACHE_SECONDS,
        shared_rate_limit_url=settings.SCRAPER_RATE_LIMIT_REDIS_URL,
    )


@dataclass
class FetchResult:
    url: str  # final URL after redirects
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    etag: str = ""
    last_modified: str = ""

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def text(self) -> str:
        match = re.search(r"charset=[\"']?([\w.:-]+)", self.headers.get("content-type", ""), re.I)
        try:
            return self.body.decode(match.group(1) if match else "utf-8", errors="replace")
        except LookupError:  # an unknown charset name
            return self.body.decode("utf-8", errors="replace")


# IPv6 forms that carry an IPv4 address in their last 32 bits (6to4 is decoded by ``ipaddress``).
_IPV4_EMBEDDING_NETWORKS = (
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64
    ipaddress.ip_network("::/96"),  # IPv4-compatible (deprecated), also holds :: and ::1
)


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):  # an IPv6 form of an IPv4 address is judged by that address
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and any(ip in network for network in _IPV4_EMBEDDING_NETWORKS):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        ip = embedded or ip
    # is_global excludes private, loopback, link-local (169.254/16, fe80::/10), shared and reserved ranges.
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in the resolver's order; raises socket.gaierror."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def check_destination(url: str, allowed_private_hosts: tuple[str, ...] = ()) -> str:
    """The address to connect to for ``url``: refuses non-http(s) URLs and hosts resolving to private,
    loopback or link-local addresses (any of them, not only the first)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"Only http and https URLs are fetched, not {parts.scheme!r}.", code="bad_scheme", url=url)
    host = (parts.hostname or "").lower()
    if not host:
        raise FetchError("The URL has no host.", code="bad_url", url=url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise FetchError(f"The URL's port is not valid ({exc}).", code="bad_url", url=url) from exc
    try:
        addresses = resolve(host, port)
    except socket.gaierror as exc:
        raise FetchError(f"The host {host} does not resolve ({exc}).", code="dns", url=url) from exc
    if not addresses:
        raise FetchError(f"The host {host} has no address.", code="dns", url=url)
    if host not in allowed_private_hosts:
        for address in addresses:
            if not _is_public(address):
                raise FetchError(
                    f"Refused: {host} resolves to the non-public address {address}.", code="private_address", url=url
                )
    return addresses[0]


def _pinned_request(url: str, address: str) -> tuple[str, str]:
    """(URL naming ``address`` instead of the host, Host header naming the host) for one request to ``url``."""
    parts = urlsplit(url)
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port
    name = parts.hostname or ""
    host_header = f"[{name}]" if ":" in name else name
    if port != default_port:
        host_header += f":{port}"
    literal = f"[{address.replace('%', '%25')}]" if ":" in address else address
    return urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, "")), host_header


class _PinnedAdapter(HTTPAdapter):
    """Sends requests whose URL names the checked address; the real host name travels in the Host header.

    For https the host name is also the TLS server name: SNI and the certificate check use it, not the address.
    """

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = urlsplit("//" + request.headers["Host"]).hostname
        return host_params, pool_kwargs


class _RateLimiter:
    """Spaces requests to one host at least ``interval`` seconds apart.

    Within a process a lock and a next-slot table do it. With ``redis_url`` (Celery workers) the
    slot is a Redis key set with NX and a millisecond expiry, so all workers together stay polite.
    """

    def __init__(self, redis_url: str = "") -> None:
        self._lock = threading.Lock()
        self._next_slot: dict[str, float] = {}
        self._redis = None
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)

    def wait(self, host: str, interval: float) -> None:
        if interval <= 0:
            return
        if self._redis is not None:
            try:
                return self._wait_shared(host, interval)
            except Exception as exc:  # noqa: BLE001 - Redis down: stay polite in this process at least
                logger.warning("shared rate limit unavailable (%s); limiting per process", exc)
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot.get(host, 0.0))
            self._next_slot[host] = slot + interval
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _wait_shared(self, host: str, interval: float) -> None:
        assert self._redis is not None  # only called when a shared Redis is configured
        key = f"carsite:scraper:slot:{host}"
        milliseconds = max(1, int(interval * 1000))
        while not self._redis.set(key, "1", nx=True, px=milliseconds):
            remaining = self._redis.pttl(key)
            time.sleep(max(remaining, 1) / 1000 if remaining and remaining > 0 else 0.001)


@dataclass
class _Robots:
    parser: urllib.robotparser.RobotFileParser | None  # None: everything allowed
    fetched_at: float


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Fetcher:
    def __init__(self, config: FetcherConfig) -> None:
        self.config = config
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": config.user_agent, "Accept-Encoding": "gzip, deflate"})
        self.session.trust_env = False  # no proxy from the environment can bypass the address guard
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, _PinnedAdapter())
        self._limiter = _RateLimiter(config.shared_rate_limit_url)
        self._robots: dict[str, _Robots] = {}
        self._robots_lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    # -- public API ---------------------------------------------------------------------------

    def get(
        self,
        url: str,
        *,
        etag: str = "",
        last_modified: str = "",
        max_bytes: int | None = None,
        rate_per_host: float | None = None,
    ) -> FetchResult:
        """GET ``url`` politely; raises FetchError. A 304 answer comes back as a result, not an error."""
        if self.config.obey_robots:
            self._check_robots(url, rate_per_host)
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        result = self._get_following_redirects(url, headers, max_bytes or self.config.max_page_bytes, rate_per_host)
        if result.status == 304 or 200 <= result.status < 300:
            return result
        raise FetchError(f"HTTP {result.status} from {result.url}.", code="http_status", url=url, status=result.status)

    def robots_allows(self, url: str, rate_per_host: float | None = None) -> bool:
        robots = self._robots_for(url, rate_per_host)
        return robots.parser is None or robots.parser.can_fetch(self.config.user_agent, url)

    # -- internals ----------------------------------------------------------------------------

    def _check_robots(self, url: str, rate_per_host: float | None) -> None:
        if not self.robots_allows(url, rate_per_host):
            raise FetchError("Disallowed by the site's robots.txt.", code="robots_disallowed", url=url)

    def _robots_for(self, url: str, rate_per_host: float | None) -> _Robots:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        with self._robots_lock:
            cached = self._robots.get(origin)
            if cached and time.monotonic() - cached.fetched_at < self.config.robots_cache_seconds:
                return cached
        robots_url = origin + "/robots.txt"
        try:
            result = self._get_following_redirects(robots_url, {}, 512 * 1024, rate_per_host)
        except FetchError as exc:
            if exc.code in ("private_address", "bad_scheme", "bad_url"):
                raise
            # Not knowing the rules is not permission: refuse for now, ask again next time.
            raise FetchError(
                f"robots.txt of {origin} could not be read ({exc}); not crawling it for now.",
                code="robots_unavailable",
                url=url,
            ) from exc
        if result.status in (401, 403):
            parser = urllib.robotparser.RobotFileParser()
            parser.disallow_all = True  # type: ignore[attr-defined]  # what RobotFileParser.read() sets on a 401/403
        elif 400 <= result.status < 500:
            parser = None
        elif 200 <= result.status < 300:
            parser = urllib.robotparser.RobotFileParser(robots_url)
            parser.parse(result.text.splitlines())
        else:
            raise FetchError(
                f"robots.txt of {origin} answered HTTP {result.status}; not crawling it for now.",
                code="robots_unavailable",
                url=url,
                status=result.status,
            )
        robots = _Robots(parser, time.monotonic())
        with self._robots_lock:
            self._robots[origin] = robots
        return robots

    def _interval(self, url: str, rate_per_host: float | None) -> float:
        rate = self.config.rate_per_host if rate_per_host is None else rate_per_host
        interval = 1.0 / rate if rate and rate > 0 else 0.0
        if self.config.obey_robots:  # a site's Crawl-delay holds even when a run lifts our own limit
            origin = "{0.scheme}://{0.netloc}".format(urlsplit(url)).lower()
            robots = self._robots.get(origin)
            delay = robots.parser.crawl_delay(self.config.user_agent) if robots and robots.parser else None
            if delay:
                interval = max(interval, float(delay))
        return interval

    def _get_following_redirects(
        self, url: str, headers: dict[str, str], max_bytes: int, rate_per_host: float | None
    ) -> FetchResult:
        current = url
        for _hop in range(self.config.max_redirects + 1):
            address = check_destination(current, self.config.allowed_private_hosts)
            result = self._get_with_retries(current, address, headers, max_bytes, rate_per_host)
            if result.status not in REDIRECT_STATUSES:
                return result
            location = result.headers.get("location")
            if not location:
                raise FetchError(f"HTTP {result.status} without a Location.", code="bad_redirect", url=url)
            current = urljoin(current, location)
            if self.config.obey_robots and current != url:
                self._check_robots(current, rate_per_host)
        raise FetchError(f"More than {self.config.max_redirects} redirects.", code="too_many_redirects", url=url)

    def _get_with_retries(
        self, url: str, address: str, headers: dict[str, str], max_bytes: int, rate_per_host: float | None
    ) -> FetchResult:
        host = urlsplit(url).netloc.lower()
        attempts = self.config.retries + 1
        for attempt in range(attempts):
            self._limiter.wait(host, self._interval(url, rate_per_host))
            last_try = attempt == attempts - 1
            try:
                result = self._get_once(url, address, headers, max_bytes)
            except FetchError as exc:
                if exc.code not in ("timeout", "connection") or last_try:
                    raise
                self._sleep_backoff(attempt, None, url, exc.code)
                continue
            if result.status in RETRYABLE_STATUSES and not last_try:
                retry_after = _retry_after_seconds(result.headers.get("retry-after"))
                self._sleep_backoff(attempt, retry_after, url, result.status)
                continue
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _sleep_backoff(self, attempt: int, retry_after: float | None, url: str, reason: object) -> None:
        delay = self.config.backoff_base * (2**attempt)
        if retry_after is not None:
            delay = max(delay, retry_after)
        delay = min(delay, self.config.retry_after_max)
        logger.info("retrying %s in %.2fs after %s", url, delay, reason)
        time.sleep(delay)

    def _get_once(self, url: str, address: str, headers: dict[str, str], max_bytes: int) -> FetchResult:
        deadline = time.monotonic() + self.config.download_deadline
        pinned_url, host_header = _pinned_request(url, address)
        try:
            response = self.session.get(
                pinned_url,
                headers={**headers, "Host": host_header},
                timeout=(self.config.connect_timeout, self.config.read_timeout),
                allow_redirects=False,
                stream=True,
            )
        except requests.Timeout as exc:
            raise FetchError(f"Timed out: {exc.__class__.__name__}.", code="timeout", url=url) from exc
        except requests.ConnectionError as exc:
            raise FetchError(f"Connection failed: {_short(exc)}.", code="connection", url=url) from exc
        except requests.RequestException as exc:
            raise FetchError(f"Request failed: {_short(exc)}.", code="request", url=url) from exc
        with response:
            result = FetchResult(
                url=url,
                status=response.status_code,
                headers={k.lower(): v for k, v in response.headers.items()},
                etag=response.headers.get("ETag", ""),
                last_modified=response.headers.get("Last-Modified", ""),
            )
            if response.status_code in REDIRECT_STATUSES or response.status_code == 304:
                return result
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(
                    f"The response is {int(declared):,} bytes; the limit is {max_bytes:,}.", code="too_large", url=url
                )
            chunks, size = [], 0
            try:
                # read1 returns what has arrived, so a server dribbling bytes meets the deadline between reads.
                while time.monotonic() < deadline:
                    chunk = response.raw.read1(64 * 1024, decode_content=True)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(
                            f"The response exceeds the limit of {max_bytes:,} bytes.", code="too_large", url=url
                        )
                    chunks.append(chunk)
                else:
                    raise FetchError(
                        f"The download took longer than {self.config.download_deadline:g} s.", code="deadline", url=url
                    )
            except urllib3.exceptions.ReadTimeoutError as exc:
                raise FetchError("Timed out while reading the body.", code="timeout", url=url) from exc
            except urllib3.exceptions.DecodeError as exc:
                raise FetchError(f"Undecodable body: {_short(exc)}.", code="bad_encoding", url=url) from exc
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.SSLError) as exc:
                raise FetchError(f"Connection lost while reading: {_short(exc)}.", code="connection", url=url) from exc
            result.body = b"".join(chunks)
            return result


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "…"


_fetchers: dict[tuple[int, FetcherConfig], Fetcher] = {}
_fetchers_lock = threading.Lock()


def get_fetcher(config: FetcherConfig | None = None) -> Fetcher:
    """The Fetcher of this worker process for ``config`` (settings by default)."""
    config = config or config_from_settings()
    key = (os.getpid(), config)
    with _fetchers_lock:
        fetcher = _fetchers.get(key)
        if fetcher is None:
            # A forked worker must not share its parent's sockets.
            for stale in [k for k in _fetchers if k[0] != os.getpid()]:
                _fetchers.pop(stale)
            fetcher = _fetchers[key] = Fetcher(config)
    return fetcher
