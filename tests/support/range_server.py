"""A local HTTP server for download tests: serves byte strings, honours (or ignores) Range, logs requests."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Files:
    """What the server holds: {path: bytes, or a list of bytes served one per request (the last one repeats)}."""

    def __init__(self, files: dict[str, bytes | list[bytes]], ranges: bool = True, cut_after: int | None = None,
                 seconds_per_kib: float = 0.0) -> None:
        self.files = files
        self.ranges = ranges
        self.cut_after = cut_after  # send only this many bytes of a whole-file answer, then hang up
        self.seconds_per_kib = seconds_per_kib  # a slow server, to stop a client mid-download
        self.requests: list[tuple[str, str | None]] = []
        self.authorizations: list[str | None] = []  # each request's Authorization header

    def body(self, path: str) -> bytes | None:
        data = self.files.get(path)
        if isinstance(data, list):
            return data.pop(0) if len(data) > 1 else data[0]
        return data


def _handler(files: Files) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            wanted = self.headers.get("Range")
            files.requests.append((self.path, wanted))
            files.authorizations.append(self.headers.get("Authorization"))
            data = files.body(self.path)
            if data is None:
                self.send_error(404)
                return
            match = re.fullmatch(r"bytes=(\d+)-", wanted or "") if files.ranges else None
            if match and int(match.group(1)) >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            start = int(match.group(1)) if match else 0
            body = data[start:]
            self.send_response(206 if match else 200)
            if match:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if files.cut_after is not None and not match:
                self.wfile.write(body[: files.cut_after])
                self.wfile.flush()
                self.close_connection = True
                return
            for offset in range(0, len(body), 1024):
                self.wfile.write(body[offset:offset + 1024])
                if files.seconds_per_kib:
                    self.wfile.flush()
                    time.sleep(files.seconds_per_kib)

    return Handler


@contextlib.contextmanager
def serving(files: Files) -> Iterator[str]:
    """Yield the base URL (http://127.0.0.1:PORT) while the server runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    server.daemon_threads = True
    server.block_on_close = False  # a slow answer to a killed client must not hold up the test
    # a short poll: shutdown() waits for the serving loop to look, 0.5 s by default, at the end of every test
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
