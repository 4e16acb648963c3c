"""An HTTP server on loopback serving dataset archives, and the MNIST manifest pointed at it (tests/data,
tests/docs)."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import re
import threading

from orchestrator.data import fetch as datafetch
from orchestrator.data.fetch import manifest_of
from workers.data.registry import Archive, Manifest


class Server:
    """Serves `files` by name; `cut[name] = k` ends the next k responses for it halfway through the body."""

    def __init__(self, files: dict[str, bytes], honor_range: bool = True):
        self.files, self.honor_range, self.cut, self.requests = files, honor_range, {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[name], 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and server.honor_range:
                    start = int(match.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if server.cut.get(name, 0) > 0:
                    server.cut[name] -= 1
                    payload = payload[: len(payload) // 2]  # then the connection closes: a short body
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def archive_of(name: str, data: bytes) -> Archive:
    return Archive(name, len(data), hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest())


def mnist_manifest(files: dict[str, bytes], server: Server, **changes) -> Manifest:
    """The registry's MNIST manifest with `server` as its only mirror and `files`' sizes and checksums."""
    archives = tuple(archive_of(a.name, files[a.name]) for a in manifest_of("mnist").archives)
    return dataclasses.replace(manifest_of("mnist"), mirrors=(server.url,), archives=archives, **changes)


def use_manifest(monkeypatch, manifest: Manifest) -> None:
    """`fetch` (and `orchestrate data fetch`) download `manifest` for its dataset, the registry's for others."""
    published = datafetch.manifest_of
    monkeypatch.setattr(datafetch, "manifest_of", lambda name: manifest if name == manifest.dataset else published(name))
