"""A local HTTP server for download tests: serves byte strings, honours (or ignores) Range, logs requests."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Files:
    def __init__(self, files: dict[str, bytes], ranges: bool = True, cut_after: int | None = None) -> None:
        self.files = files
        self.ranges = ranges
        self.cut_after = cut_after  # send only this many bytes of a whole-file answer, then hang up
        self.requests: list[tuple[str, str | None]] = []


def _handler(files: Files) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            wanted = self.headers.get("Range")
            files.requests.append((self.path, wanted))
            data = files.files.get(self.path)
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
            self.wfile.write(body)

    return Handler


@contextlib.contextmanager
def serving(files: Files) -> Iterator[str]:
    """Yield the base URL (http://127.0.0.1:PORT) while the server runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
