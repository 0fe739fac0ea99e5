"""The scraper's HTTP client against a real local server: retries, robots, limits, the address guard."""

import socket
import ssl
import subprocess
import time

import pytest

from bench.devsite import FixtureSite
from scraping import http
from scraping.http import Fetcher, FetchError, check_destination, config_from_settings


@pytest.fixture
def fetcher(scraper_settings):
    instance = Fetcher(config_from_settings())
    yield instance
    instance.close()


@pytest.fixture
def open_site(site):
    site.add("/robots.txt", "User-agent: *\nDisallow: /private/\n", content_type="text/plain")
    site.add("/page", "<html>hello</html>")
    return site


def test_user_agent_names_a_contact_and_robots_is_read_once_per_host(open_site, fetcher):
    assert fetcher.get(open_site.url("/page")).text == "<html>hello</html>"
    fetcher.get(open_site.url("/page"))
    assert open_site.hits["/robots.txt"] == 1
    assert all("(+https://carsite.example/scraper)" in h["user-agent"] for _p, h in open_site.requests)


def test_robots_disallowed_path_is_never_requested(open_site, fetcher):
    open_site.add("/private/secret", "no")
    with pytest.raises(FetchError) as error:
        fetcher.get(open_site.url("/private/secret"))
    assert error.value.code == "robots_disallowed"
    assert open_site.hits["/private/secret"] == 0


def test_429_waits_for_retry_after(open_site, fetcher):
    open_site.resources["/page"].faults = ["status:429:1"]
    started = time.monotonic()
    assert fetcher.get(open_site.url("/page")).status == 200
    assert time.monotonic() - started >= 0.95
    assert open_site.hits["/page"] == 2


def test_500_then_success_and_persistent_500_is_an_error(open_site, fetcher):
    open_site.resources["/page"].faults = ["status:500", "status:503"]
    assert fetcher.get(open_site.url("/page")).status == 200
    assert open_site.hits["/page"] == 3
    open_site.add("/broken", "x", always="status:500")
    with pytest.raises(FetchError) as error:
        fetcher.get(open_site.url("/broken"))
    assert (error.value.code, error.value.status) == ("http_status", 500)
    assert open_site.hits["/broken"] == 3  # one try and two retries


def test_404_is_not_retried(open_site, fetcher):
    with pytest.raises(FetchError) as error:
        fetcher.get(open_site.url("/missing"))
    assert error.value.status == 404 and open_site.hits["/missing"] == 1


def test_timeout_and_connection_reset_are_retried(open_site, fetcher):
    open_site.resources["/page"].faults = ["sleep:1.0", "reset"]
    assert fetcher.get(open_site.url("/page")).status == 200
    assert open_site.hits["/page"] == 3
    open_site.add("/always-reset", "x", always="reset")
    with pytest.raises(FetchError) as error:
        fetcher.get(open_site.url("/always-reset"))
    assert error.value.code == "connection"


def test_response_size_cap_with_and_without_content_length(open_site, fetcher):
    open_site.add("/big", b"x" * 50_000)
    with pytest.raises(FetchError) as declared:
        fetcher.get(open_site.url("/big"), max_bytes=10_000)
    assert declared.value.code == "too_large"
    open_site.add("/big-undeclared", b"x" * 500_000, always="nolength")
    with pytest.raises(FetchError) as streamed:
        fetcher.get(open_site.url("/big-undeclared"), max_bytes=10_000)
    assert streamed.value.code == "too_large"
    assert len(fetcher.get(open_site.url("/big"), max_bytes=60_000).body) == 50_000


def test_conditional_request_answers_304(open_site, fetcher):
    first = fetcher.get(open_site.url("/page"))
    assert first.etag and first.last_modified
    again = fetcher.get(open_site.url("/page"), etag=first.etag, last_modified=first.last_modified)
    assert again.not_modified and again.body == b""
    assert open_site.requests[-1][1]["if-none-match"] == first.etag


def test_rate_limit_spaces_requests_per_host(open_site, fetcher):
    fetcher.get(open_site.url("/page"), rate_per_host=5)
    started = time.monotonic()
    for _ in range(3):
        fetcher.get(open_site.url("/page"), rate_per_host=5)
    assert time.monotonic() - started >= 0.55


@pytest.mark.parametrize(
    "target", ["http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/", "http://[::1]:1/", "http://localhost:1/"]
)
def test_redirect_to_a_private_address_is_refused_before_connecting(open_site, fetcher, target):
    open_site.resources["/page"].always = f"redirect:{target}"
    with pytest.raises(FetchError) as error:
        fetcher.get(open_site.url("/page"))
    assert error.value.code == "private_address"
    assert open_site.hits["/page"] == 1


@pytest.mark.parametrize(
    "url", ["http://127.0.0.2/", "http://192.168.1.1/", "http://[fe80::1]/", "http://0.0.0.0/", "http://100.64.0.1/"]
)
def test_private_destinations_are_refused_unless_allowed(url):
    with pytest.raises(FetchError) as error:
        check_destination(url, allowed_private_hosts=("127.0.0.1",))
    assert error.value.code == "private_address"


def test_only_http_schemes_and_allowed_hosts_pass():
    check_destination("http://127.0.0.1:8000/x", allowed_private_hosts=("127.0.0.1",))
    with pytest.raises(FetchError) as error:
        check_destination("file:///etc/passwd")
    assert error.value.code == "bad_scheme"
    with pytest.raises(FetchError):
        check_destination("http://127.0.0.1:8000/x")  # loopback is refused when not explicitly allowed


def test_unreadable_robots_means_no_crawl(site, fetcher):
    site.add("/robots.txt", "x", always="status:503")
    site.add("/page", "hello")
    with pytest.raises(FetchError) as error:
        fetcher.get(site.url("/page"))
    assert error.value.code == "robots_unavailable"
    assert site.hits["/page"] == 0


def test_rate_limit_is_shared_between_processes_through_redis(open_site, scraper_settings):
    import redis

    url = "redis://127.0.0.1:6379/13"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("needs Redis")
    scraper_settings.SCRAPER_RATE_LIMIT_REDIS_URL = url
    # Two fetchers stand for two worker processes: separate sessions and in-process limiters.
    first, second = Fetcher(config_from_settings()), Fetcher(config_from_settings())
    first.get(open_site.url("/page"))
    second.get(open_site.url("/page"))  # both have robots.txt now
    started = time.monotonic()
    for fetcher in (first, second, first, second):
        fetcher.get(open_site.url("/page"), rate_per_host=5)
    assert time.monotonic() - started >= 0.55  # 4 requests, 0.2 s apart, whichever process sends them


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://[64:ff9b::7f00:1]/", id="nat64-127.0.0.1"),
        pytest.param("http://[64:ff9b::a9fe:a9fe]/", id="nat64-169.254.169.254"),
        pytest.param("http://[::7f00:1]/", id="ipv4-compatible-127.0.0.1"),
        pytest.param("http://[::a00:1]/", id="ipv4-compatible-10.0.0.1"),
        pytest.param("http://[2002:7f00:1::1]/", id="6to4-127.0.0.1"),
        pytest.param("http://[2002:c0a8:101::1]/", id="6to4-192.168.1.1"),
    ],
)
def test_ipv6_forms_of_private_ipv4_addresses_are_refused(url):
    with pytest.raises(FetchError) as error:
        check_destination(url)
    assert error.value.code == "private_address"


def test_ipv6_forms_of_public_ipv4_addresses_pass():
    # Only the address is checked here; nothing connects to it.
    assert check_destination("http://[64:ff9b::808:808]/") == "64:ff9b::808:808"
    assert check_destination("http://[2002:808:808::1]/") == "2002:808:808::1"


# --- DNS rebinding: the connection goes to the address that was checked ----------------------
#
# Only loopback is ever contacted: 127.0.0.1 plays a public host and 127.0.0.2 a private one.


@pytest.fixture
def public_and_secret_sites(monkeypatch):
    """(public site on 127.0.0.1:P, secret site on 127.0.0.2:P): one port, so a DNS answer alone picks the site."""
    for _attempt in range(20):
        public = FixtureSite().start()
        try:
            secret = FixtureSite(host="127.0.0.2", port=public._server.server_address[1]).start()
            break
        except OSError:  # that port is taken on 127.0.0.2: try another
            public.stop()
    else:
        pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2")
    public.add("/page", "public page")
    secret.add("/page", "secret")
    monkeypatch.setattr(http, "_is_public", lambda address: address == "127.0.0.1")
    yield public, secret
    public.stop()
    secret.stop()


@pytest.fixture
def rebinding_resolver(monkeypatch):
    """rebind.test answers 127.0.0.1 on its first lookup and 127.0.0.2 on every later one."""
    real_getaddrinfo = socket.getaddrinfo
    lookups = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else "127.0.0.2"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


@pytest.fixture
def fetcher_without_robots(scraper_settings):
    scraper_settings.SCRAPER_OBEY_ROBOTS = False  # one lookup per fetch: the rebinding happens on the connect
    instance = Fetcher(config_from_settings())
    yield instance
    instance.close()


def test_a_second_dns_answer_cannot_swap_in_a_private_address(
    public_and_secret_sites, rebinding_resolver, fetcher_without_robots
):
    public, secret = public_and_secret_sites
    port = public._server.server_address[1]
    result = fetcher_without_robots.get(f"http://rebind.test:{port}/page")
    assert result.body == b"public page"
    assert secret.hits["/page"] == 0
    assert public.requests[-1][1]["host"] == f"rebind.test:{port}"


def test_a_redirect_hop_connects_to_the_address_checked_for_it(
    public_and_secret_sites, rebinding_resolver, fetcher_without_robots
):
    public, secret = public_and_secret_sites
    port = public._server.server_address[1]
    public.add("/start", "", always=f"redirect:http://rebind.test:{port}/page")
    result = fetcher_without_robots.get(public.url("/start"))
    assert (result.url, result.body) == (f"http://rebind.test:{port}/page", b"public page")
    assert secret.hits["/page"] == 0


def _self_signed_certificate(directory, name: str):
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}"]
        + ["-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize("certificate_name", ["pinned.test", "other.test"])
def test_https_to_the_pinned_address_keeps_the_host_name_for_sni_and_the_certificate(
    tmp_path, monkeypatch, scraper_settings, certificate_name
):
    cert, key = _self_signed_certificate(tmp_path, certificate_name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        return real_getaddrinfo("127.0.0.1" if host == "pinned.test" else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    scraper_settings.SCRAPER_ALLOWED_PRIVATE_HOSTS = ["pinned.test"]
    scraper_settings.SCRAPER_OBEY_ROBOTS = False
    scraper_settings.SCRAPER_RETRIES = 0
    with FixtureSite(tls=context) as site:
        site.add("/page", "over tls")
        url = f"https://pinned.test:{site._server.server_address[1]}/page"
        fetcher = Fetcher(config_from_settings())
        fetcher.session.verify = str(cert)  # trust only this certificate
        try:
            if certificate_name == "pinned.test":
                assert fetcher.get(url).body == b"over tls"
                assert site.requests[-1][1]["host"] == url.split("/")[2]
            else:  # a certificate for another name is refused, although the address is the same
                with pytest.raises(FetchError) as error:
                    fetcher.get(url)
                assert error.value.code == "connection"
                assert "/page" not in site.hits
        finally:
            fetcher.close()
        assert site.server_names[0] == "pinned.test"


def test_a_download_has_a_total_deadline(open_site, scraper_settings):
    scraper_settings.SCRAPER_DOWNLOAD_DEADLINE = 1.0
    # Each byte comes well within the read timeout (0.4 s); the whole body would take 4 s.
    open_site.add("/slow", b"x" * 100, always="dribble:0.04")
    fetcher = Fetcher(config_from_settings())
    try:
        with pytest.raises(FetchError) as error:
            fetcher.get(open_site.url("/slow"))
    finally:
        fetcher.close()
    assert error.value.code == "deadline"
    assert open_site.hits["/slow"] == 1  # a deadline is not retried: the same server would hold us again
