"""Render the project's kedro-viz lineage in headless Chromium, offline.

    python docs/tools/lineage_screenshot.py                 # kedro viz build, then the PNG
    python docs/tools/lineage_screenshot.py --build-dir build --output /tmp/lineage.png

writes ``docs/images/lineage.png`` (the picture in docs/data_flow.md). ``kedro viz build``
writes a static site (``build/``: the page, its assets and the graph as JSON under ``api/``);
the site is served here from 127.0.0.1 and every other host is unresolvable for Chromium, so
the picture shows what a user without internet sees. Chromium is driven through its DevTools
protocol (a small client below: no extra package), so that the picture is taken once the
graph is laid out and still, however slow the machine. The page asks Google Fonts for its
typeface and falls back to a local one; :func:`render` reports any other host it asked for.

``tests/test_viz.py`` uses the same functions to check that the built page draws our graph.
Needs Debian's ``chromium`` (``apt-get install chromium``) or Chrome on the ``PATH``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PROJECT = Path(__file__).resolve().parents[2]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Hosts the page may ask for and do without: the web font (the page falls back to a local one).
FONT_HOSTS = frozenset({"fonts.googleapis.com", "fonts.gstatic.com"})
#: kedro-viz keeps its settings in localStorage["KedroViz"]: a light theme for the docs, no
#: feature tour over the graph, no sidebar or minimap beside it.
VIEW_SETTINGS = {
    "theme": "light",
    "showFeatureHints": False,
    "visible": {"sidebar": False, "miniMap": False},
}
SEED_PATH = "/__view_settings__.html"


class ChromiumNotFoundError(FileNotFoundError):
    """No Chromium or Chrome binary on the PATH."""


def find_chromium() -> str:
    """The path of a Chromium/Chrome binary (``CHROMIUM`` overrides the search)."""
    override = os.environ.get("CHROMIUM")
    if override:
        return override
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumNotFoundError(
        f"none of {', '.join(CHROMIUM_NAMES)} is on the PATH: install Debian's chromium "
        "(`apt-get install chromium`) or set CHROMIUM=/path/to/chrome"
    )


def build_viz(project: Path, kedro: str | None = None, timeout_s: float = 600) -> Path:
    """Run ``kedro viz build`` in ``project``; returns the site's folder (``project/build``).

    Raises:
        RuntimeError: the command failed (its output's tail is in the message).
    """
    kedro = kedro or str(Path(sys.executable).parent / "kedro")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    started = time.time()
    proc = subprocess.run(
        [kedro, "viz", "build"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    site = project / "build"
    graph = site / "api" / "main"
    # kedro-viz reports some failures (an invalid pipeline) and still exits 0: a graph file
    # written by this build is the real check, not one left by an earlier build.
    if proc.returncode != 0 or not graph.is_file() or graph.stat().st_mtime < started - 1:
        raise RuntimeError(
            f"`kedro viz build` in {project} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return site


class _SiteHandler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if urlsplit(self.path).path == SEED_PATH:
            # Same origin as the site, so the settings land in the site's localStorage.
            body = (
                "<!doctype html><script>"
                f"localStorage.setItem('KedroViz', {json.dumps(json.dumps(VIEW_SETTINGS))});"
                "</script>"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass


@contextlib.contextmanager
def serve(site: Path) -> Iterator[str]:
    """Serve ``site`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_SiteHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def page_requests(netlog: Path, origin: str) -> list[str]:
    """URLs the page at ``origin`` requested, from a Chromium ``--log-net-log`` file.

    Chromium's own background traffic (update checks, sign-in) has no origin as initiator,
    so keeping the requests initiated by ``origin`` leaves the page's.
    """
    log = json.loads(netlog.read_text(encoding="utf-8"))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if event["type"] == start and params.get("initiator") == origin and "url" in params:
            urls.append(params["url"])
    return urls


def chromium_command(profile: Path, *extra: str) -> list[str]:
    """Headless Chromium on a fresh profile that resolves no host but 127.0.0.1, with its
    DevTools endpoint on a free port of 127.0.0.1."""
    return [
        find_chromium(),
        "--headless",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        *extra,
        "about:blank",
    ]


_RAISE = object()


class DevToolsError(RuntimeError):
    """Chromium answered a DevTools command with an error."""


class DevTools:
    """A minimal Chrome DevTools Protocol client over one WebSocket (RFC 6455, text frames)."""

    def __init__(self, ws_url: str, timeout_s: float = 60) -> None:
        url = urlsplit(ws_url)
        self._sock = socket.create_connection((url.hostname, url.port), timeout=timeout_s)
        key = base64.b64encode(os.urandom(16)).decode()
        self._sock.sendall(
            (
                f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self._buffer = b""
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._recv_some()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"DevTools handshake refused: {head[:200]!r}")
        self._next_id = 0

    def _recv_some(self) -> bytes:
        chunk = self._sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("DevTools connection closed")
        return chunk

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._buffer += self._recv_some()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._sock.sendall(header + mask + masked)

    def _message(self) -> dict[str, Any]:
        parts: list[bytes] = []
        while True:
            first, second = self._read(2)
            n = second & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            payload = self._read(n)  # frames from the server are not masked
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the connection")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            parts.append(payload)
            if first & 0x80:
                return json.loads(b"".join(parts))

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events in between are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        self._send_frame(0x1, json.dumps(message).encode())
        while True:
            reply = self._message()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise DevToolsError(f"DevTools {method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str, *, default: Any = _RAISE) -> Any:
        """The value of a JavaScript expression in the page; ``default`` if given and the
        page cannot answer (it is navigating)."""
        try:
            result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        except DevToolsError:
            if default is _RAISE:
                raise
            return default
        return result.get("result", {}).get("value")

    def close(self) -> None:
        self._sock.close()


def _wait_for(predicate: Callable[[], Any], what: str, timeout_s: float, poll_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"{what} within {timeout_s:.0f} s")


def _page_socket(profile: Path, proc: subprocess.Popen, timeout_s: float) -> str:
    port_file = profile / "DevToolsActivePort"

    def port() -> str | None:
        if proc.poll() is not None:
            raise RuntimeError(f"Chromium exited with {proc.returncode} before DevTools started")
        text = port_file.read_text() if port_file.is_file() else ""
        return text.split("\n", 1)[0].strip() or None

    number = _wait_for(port, "Chromium did not open its DevTools port", timeout_s)
    with urllib.request.urlopen(f"http://127.0.0.1:{number}/json/list", timeout=10) as reply:
        targets = json.loads(reply.read())
    return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")


# The graph is drawn when every node label has faded in and the zoom-to-fit has settled: the
# same label count, zoom and first node position on consecutive polls.
_GRAPH_STATE = """(() => {
  const labels = [...document.querySelectorAll('.pipeline-node__text')];
  const node = document.querySelector('.pipeline-node');
  return JSON.stringify({
    labels: labels.length,
    faded: labels.filter(e => getComputedStyle(e).opacity !== '1').length,
    transform: [...document.querySelectorAll('svg g')].slice(0, 3).map(
      g => g.getAttribute('transform')).join(' '),
    box: node ? JSON.stringify(node.getBoundingClientRect()) : null,
  });
})()"""


@dataclass
class Rendered:
    """What Chromium drew: the DOM once the graph settled, and the page's requests elsewhere."""

    dom: str
    external_requests: list[str]

    @property
    def unexpected_requests(self) -> list[str]:
        """Requests to hosts other than 127.0.0.1 and the web-font hosts."""
        return [u for u in self.external_requests if urlsplit(u).hostname not in FONT_HOSTS]


def render(
    site: Path,
    *,
    screenshot: Path | None = None,
    window: tuple[int, int] = (1600, 1000),
    timeout_s: float = 180,
    expand_all: bool = False,
) -> Rendered:
    """Load the built site from 127.0.0.1 in headless Chromium with :data:`VIEW_SETTINGS`, and
    wait until the graph is drawn and still; returns the DOM and the page's requests to other
    hosts, and writes a PNG of the window to ``screenshot`` if given.

    The view is the one ``kedro viz`` opens on: every modular pipeline (namespace) a collapsed
    box; ``expand_all`` opens every box (``?expandAllPipelines=true``).

    Raises:
        RuntimeError: Chromium failed, or the graph was not drawn within ``timeout_s``.
    """
    with tempfile.TemporaryDirectory(prefix="lineage-") as tmp, serve(site) as base:
        profile, netlog = Path(tmp) / "profile", Path(tmp) / "netlog.json"
        log = Path(tmp) / "chromium.log"
        cmd = chromium_command(
            profile, f"--window-size={window[0]},{window[1]}", f"--log-net-log={netlog}"
        )
        with log.open("w") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            devtools = DevTools(_page_socket(profile, proc, 60))
            try:
                devtools.call("Page.navigate", url=base + SEED_PATH)
                _wait_for(
                    lambda: devtools.evaluate("localStorage.getItem('KedroViz')", default=None),
                    "the view settings were not stored",
                    30,
                )
                query = "?expandAllPipelines=true" if expand_all else ""
                devtools.call("Page.navigate", url=f"{base}/{query}")
                states: list[str] = []

                def settled() -> bool:
                    state = devtools.evaluate(_GRAPH_STATE, default=None)
                    if state is None:
                        return False
                    states.append(state)
                    parsed = json.loads(state)
                    return (
                        parsed["labels"] > 0
                        and parsed["faded"] == 0
                        and (states[-4:] == [state] * 4)
                    )

                _wait_for(settled, "the lineage graph was not drawn", timeout_s, poll_s=0.5)
                dom = devtools.evaluate("document.documentElement.outerHTML")
                if screenshot is not None:
                    shot = devtools.call("Page.captureScreenshot", format="png")
                    screenshot.parent.mkdir(parents=True, exist_ok=True)
                    screenshot.write_bytes(base64.b64decode(shot["data"]))
                # Closing the browser, rather than killing it, completes the net log.
                devtools.call("Browser.close")
            finally:
                devtools.close()
            proc.wait(timeout=30)
        except Exception as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            raise RuntimeError(f"{exc}; Chromium's log:\n{log.read_text()[-3000:]}") from exc
        requests = page_requests(netlog, base)
    external = [u for u in requests if urlsplit(u).hostname != "127.0.0.1"]
    return Rendered(dom=dom, external_requests=external)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=PROJECT, help="Kedro project root")
    parser.add_argument(
        "--build-dir", type=Path, help="an existing `kedro viz build` output (default: build it)"
    )
    parser.add_argument("--output", type=Path, default=PROJECT / "docs" / "images" / "lineage.png")
    parser.add_argument("--width", type=int, default=1900)
    parser.add_argument("--height", type=int, default=1800)
    parser.add_argument(
        "--expand-all", action="store_true", help="open every box (default: the first view)"
    )
    args = parser.parse_args(argv)
    site = args.build_dir or build_viz(args.project)
    rendered = render(
        site,
        screenshot=args.output,
        window=(args.width, args.height),
        expand_all=args.expand_all,
    )
    print(f"wrote {args.output} ({args.width}x{args.height})")
    if rendered.unexpected_requests:
        print(f"the page asked other hosts for: {rendered.unexpected_requests}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
