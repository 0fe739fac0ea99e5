"""A local web site to crawl: a real HTTP server on 127.0.0.1 serving pages in The Car Connection
layout or with schema.org JSON-LD, with faults on demand. Used by the tests and bench/scrape_benchmark.py;
never by the crawler itself.

Faults (``Resource.faults`` are used one per request, then ``Resource.always`` applies):
``reset`` (TCP reset), ``sleep:<s>`` (answer late), ``status:<code>[:<retry-after>]``,
``redirect:<url>``, ``nolength`` (no Content-Length header), ``dribble:<s>`` (the body one byte every <s>).
"""

import hashlib
import html
import io
import json
import random
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from PIL import Image

LAST_MODIFIED = "Mon, 02 Jan 2023 10:00:00 GMT"


@dataclass
class Resource:
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    faults: list[str] = field(default_factory=list)
    always: str = ""
    validators: bool = True  # send ETag / Last-Modified and answer conditional requests with 304


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that time out or are reset on purpose are part of the test, not server errors.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class FixtureSite:
    """Serves ``resources`` (path → Resource) on a loopback address (a random port by default) while started.

    With ``tls`` (a server-side SSLContext) it speaks https; ``server_names`` records the TLS server names asked for.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.server_names: list[str | None] = []
        self.resources: dict[str, Resource] = {}
        self.hits: Counter[str] = Counter()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.delay = 0.0  # seconds added to every answer (slow site)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- content --------------------------------------------------------------------------------

    def add(self, path: str, body: bytes | str, **options) -> Resource:
        resource = Resource(body=body.encode() if isinstance(body, str) else body, **options)
        self.resources[path] = resource
        return resource

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the site first"
        host, port = self._server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    # -- serving --------------------------------------------------------------------------------

    def start(self) -> "FixtureSite":
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms ACK stalls

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
                pass

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                site._handle(self)

        self._server = _QuietServer((self.host, self.port), Handler)
        if self.tls:
            self.tls.sni_callback = lambda _socket, name, _context: self.server_names.append(name)
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FixtureSite":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        with self._lock:
            self.hits[path] += 1
            self.requests.append((path, {k.lower(): v for k, v in handler.headers.items()}))
            resource = self.resources.get(path)
            fault = ""
            if resource is not None:
                fault = resource.faults.pop(0) if resource.faults else resource.always
        if self.delay:
            time.sleep(self.delay)
        if resource is None:
            return self._send(handler, 404, b"not found", "text/plain")
        if fault == "reset":
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
            handler.close_connection = True
            return None
        if fault.startswith("sleep:"):
            time.sleep(float(fault.split(":", 1)[1]))
        if fault.startswith("status:"):
            parts = fault.split(":")
            extra = {"Retry-After": parts[2]} if len(parts) > 2 else {}
            return self._send(handler, int(parts[1]), b"fault", "text/plain", extra)
        if fault == "nolength":
            # No Content-Length: the client learns the size only by reading (and must stop itself).
            handler.send_response(200)
            handler.send_header("Content-Type", resource.content_type)
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(resource.body)
            handler.close_connection = True
            return None
        if fault.startswith("dribble:"):
            interval = float(fault.split(":", 1)[1])
            handler.send_response(200)
            handler.send_header("Content-Type", resource.content_type)
            handler.send_header("Content-Length", str(len(resource.body)))
            handler.end_headers()
            try:
                for index in range(len(resource.body)):
                    handler.wfile.write(resource.body[index : index + 1])
                    handler.wfile.flush()
                    time.sleep(interval)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should
            return None
        if fault.startswith("redirect:"):
            return self._send(handler, 302, b"", "text/plain", {"Location": fault.split(":", 1)[1]})
        headers = {}
        if resource.validators:
            etag = '"' + hashlib.sha1(resource.body).hexdigest()[:16] + '"'
            headers = {"ETag": etag, "Last-Modified": LAST_MODIFIED}
            if handler.headers.get("If-None-Match") == etag:
                return self._send(handler, 304, b"", None, headers)
        return self._send(handler, 200, resource.body, resource.content_type, headers)

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        content_type: str | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        try:
            handler.send_response(status)
            if content_type:
                handler.send_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(0 if status == 304 else len(body)))
            handler.end_headers()
            if status != 304:
                handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. it timed out): nothing to tell it


# --- images ----------------------------------------------------------------------------------


def photo(seed: int, size: tuple[int, int] = (320, 240), fmt: str = "JPEG", brightness: int = 0) -> bytes:
    """A test photo: a random coloured block grid, so different seeds look different to a perceptual hash."""
    rng = random.Random(seed)
    grid = Image.new("RGB", (8, 6))
    grid.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(48)])
    image = grid.resize(size, Image.Resampling.BILINEAR)
    if brightness:
        image = image.point(lambda value: max(0, min(255, value + brightness)))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


# --- The Car Connection layout ---------------------------------------------------------------


def _page(title: str, body: str) -> str:
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title>"
    return f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>"


def tcc_index_html(makes: list[tuple[str, str]]) -> str:
    items = "".join(f'<li><a href="/make/new,{slug}">{html.escape(name)}</a></li>' for slug, name in makes)
    return _page("New cars", f"<h1>New cars</h1><ul class='makes'>{items}</ul><a href='/about'>About</a>")


def tcc_make_html(make: str, models: list[tuple[str, str]]) -> str:
    items = "".join(f'<div class="name"><a href="{href}">{html.escape(name)}</a></div>' for href, name in models)
    return _page(make, f"<h1>{html.escape(make)}</h1><div class='models'>{items}</div>")


def tcc_model_html(title: str, years: list[tuple[str, int]]) -> str:
    links = "".join(f'<a href="{href}">{year}</a> ' for href, year in years)
    return _page(title, f"<h1>{html.escape(title)}</h1><div class='year-selector'>{links}</div>")


def tcc_spec_html(make: str, model: str, year: int | str, msrp: str | None, rows: list[tuple[str, str]]) -> str:
    crumbs = (
        f'<a id="a_bc_0" href="/">Home</a> <a id="a_bc_1" href="#">{html.escape(make)}</a> '
        f'<a id="a_bc_2" href="#">{html.escape(model)}</a> <a id="a_bc_3" href="#">{year}</a>'
    )
    price = f'<div class="price">Starting at <span class="msrp">{html.escape(msrp)}</span></div>' if msrp else ""
    items = "".join(
        f'<div class="specs-set-item"><span class="key">{html.escape(name)}</span>'
        f'<span class="value">{html.escape(value)}</span></div>'
        for name, value in rows
    )
    return _page(f"{year} {make} {model} specifications", f"<nav>{crumbs}</nav>{price}<div class='specs'>{items}</div>")


def tcc_gallery_html(thumbnail_urls: list[str]) -> str:
    images = "".join(f'<img src="{html.escape(url)}" alt="">' for url in thumbnail_urls)
    # Real galleries repeat thumbnails in scripts too; the parser must not double them.
    script = "<script>var photos = " + json.dumps(thumbnail_urls) + ";</script>"
    return _page("Photos", f"<div class='gallery'>{images}</div>{script}")


@dataclass
class TccCar:
    make: str
    make_slug: str
    model: str
    model_slug: str
    year: int
    msrp: str | None = None
    rows: list[tuple[str, str]] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)  # large images, in gallery order

    @property
    def stem(self) -> str:
        return f"{self.year}_{self.make_slug}_{self.model_slug}"


def build_tcc_site(site: FixtureSite, cars: list[TccCar], *, robots: str = "User-agent: *\nAllow: /\n") -> None:
    """Add the pages of ``cars`` to ``site``: index, make, model, spec, gallery pages and images."""
    site.add("/robots.txt", robots, content_type="text/plain")
    makes: dict[str, str] = {}
    models: dict[tuple[str, str], list[TccCar]] = {}
    for car in cars:
        makes.setdefault(car.make_slug, car.make)
        models.setdefault((car.make_slug, car.model_slug), []).append(car)
    site.add("/new-cars", tcc_index_html(sorted(makes.items())))
    site.add("/about", _page("About", "<p>About us</p>"))
    for make_slug, make in makes.items():
        entries = [
            (f"/{make_slug}_{model_slug}", group[0].model)
            for (m, model_slug), group in models.items()
            if m == make_slug
        ]
        site.add(f"/make/new,{make_slug}", tcc_make_html(make, entries))
    for (make_slug, model_slug), group in models.items():
        years = [(f"/{make_slug}_{model_slug}/overview/{car.stem}", car.year) for car in group]
        site.add(f"/{make_slug}_{model_slug}", tcc_model_html(f"{group[0].make} {group[0].model}", years))
        for car in group:
            site.add(f"/{make_slug}_{model_slug}/overview/{car.stem}", _page("Overview", "<p>Overview</p>"))
            site.add(
                f"/{make_slug}_{model_slug}/specifications/{car.stem}",
                tcc_spec_html(car.make, car.model, car.year, car.msrp, car.rows),
            )
            thumbnails = []
            for number, image in enumerate(car.images, start=1):
                path = f"/img/sml/{car.stem}_{number}"
                site.add(path + "_l.jpg", image, content_type="image/jpeg")
                site.add(path + "_s.jpg", b"thumbnail", content_type="image/jpeg")
                thumbnails.append(path + "_s.jpg")
            site.add(f"/{make_slug}_{model_slug}/photos/{car.stem}", tcc_gallery_html(thumbnails))


def tcc_spec_path(car: TccCar) -> str:
    return f"/{car.make_slug}_{car.model_slug}/specifications/{car.stem}"


def tcc_image_path(car: TccCar, number: int) -> str:
    return f"/img/sml/{car.stem}_{number}_l.jpg"


# --- schema.org JSON-LD ----------------------------------------------------------------------


def jsonld_page_html(data: dict | list, title: str = "Car") -> str:
    return _page(title, f'<script type="application/ld+json">{json.dumps(data)}</script><h1>{html.escape(title)}</h1>')
