"""A fake Hugging Face Hub on loopback for `search-env download` (tests have no internet).

It answers the few endpoints huggingface_hub's `snapshot_download`, `hf_hub_download`,
`list_repo_tree` and `verify_repo_checksums` use, for data set repos held in memory, as the Hub does:

- GET  /api/datasets/{repo}/revision/{rev}       repo info: {"id", "sha" (the commit), "siblings"}
- GET  /api/datasets/{repo}/tree/{rev}[/{path}]  the file list: size, git blob oid, and for LFS files
                                                 {"lfs": {"oid": sha256, "size", "pointerSize"}}
- HEAD|GET /datasets/{repo}/resolve/{rev}/{path} the file: X-Repo-Commit, ETag (the sha256 for LFS,
                                                 the blob oid otherwise), X-Linked-Etag/-Size for
                                                 LFS, Content-Length; `Range: bytes=N-` gets a 206

Faults a test can switch on: `cut_after[path] = n` sends only the first n bytes of a whole-file GET
and drops the connection; `stall_after[path] = n` sends them and then nothing (a hung transfer);
`corrupt` serves other bytes than the listing's hashes say. Hostile ones: `endless` sends the file and
then more bytes without end (no Content-Length, a body that never stops); `overannounce[path] = n`
announces a Content-Length n bytes beyond the listed size and sends that many extra; `drip[path] = s`
sends the file one byte every s seconds; `unhashed` lists the file with no hash; `unserved` lists it
but answers its GET with a 404. Every request is recorded in `requests` (method, path, Range).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

COMMIT = "c0ffee" + "0" * 34
LFS_MIN_BYTES = 64  # files this size or larger are LFS files (the Hub's threshold is larger; tests are small)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeHub:
    repos: dict[str, dict[str, bytes]]
    cut_after: dict[str, int] = field(default_factory=dict)
    stall_after: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    endless: set[str] = field(default_factory=set)
    overannounce: dict[str, int] = field(default_factory=dict)
    drip: dict[str, float] = field(default_factory=dict)
    unhashed: set[str] = field(default_factory=set)
    unserved: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, head=True)

            def do_GET(self) -> None:
                hub._serve(self, head=False)

        self.released = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    # -- what the listing says -------------------------------------------------------------------
    def _entry(self, path: str, data: bytes) -> dict:
        entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
        if path in self.unhashed:
            entry["oid"] = ""
            return entry
        if len(data) >= LFS_MIN_BYTES:
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def etag(self, path: str, data: bytes) -> str:
        entry = self._entry(path, data)
        return entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]

    # -- serving ---------------------------------------------------------------------------------
    def _serve(self, handler: BaseHTTPRequestHandler, *, head: bool) -> None:
        url = urlsplit(handler.path)
        path = unquote(url.path)
        byte_range = handler.headers.get("Range")
        self.requests.append((handler.command, path, byte_range))
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/revision/([^/]+)", path):
            files = self._files(m.group(1))
            if files is None:
                return self._json(handler, 404, {"error": "Repository not found"}, head)
            body = {"id": m.group(1), "sha": COMMIT, "private": False, "siblings": [{"rfilename": p} for p in files]}
            return self._json(handler, 200, body, head)
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path):
            files = self._files(m.group(1))
            if files is None:
                return self._json(handler, 404, {"error": "Repository not found"}, head)
            prefix = (m.group(3) or "/").lstrip("/")
            entries = [self._entry(p, d) for p, d in sorted(files.items()) if p.startswith(prefix)]
            folders = sorted({p.rsplit("/", 1)[0] for p in files if "/" in p and p.startswith(prefix)})
            entries += [{"type": "directory", "path": d, "oid": "0" * 40} for d in folders]
            return self._json(handler, 200, entries, head)
        if m := re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            files = self._files(m.group(1))
            if files is None or m.group(3) not in files or m.group(3) in self.unserved:
                return self._json(handler, 404, {"error": "Entry not found"}, head, {"X-Error-Code": "EntryNotFound"})
            return self._file(handler, m.group(3), files[m.group(3)], byte_range, head)
        return self._json(handler, 404, {"error": f"no route {path}"}, head)

    def _files(self, repo: str) -> dict[str, bytes] | None:
        return self.repos.get(repo)

    def _json(self, handler, status: int, body, head: bool, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        if not head:
            handler.wfile.write(data)

    def _file(self, handler, path: str, data: bytes, byte_range: str | None, head: bool) -> None:
        etag = self.etag(path, data)
        if path in self.corrupt:
            data = bytes(b ^ 0xFF for b in data)  # same size, other bytes
        start = 0
        if byte_range and not head:
            start = int(re.fullmatch(r"bytes=(\d+)-", byte_range).group(1))
        if path in self.endless and not head:
            return self._endless(handler, data[start:])
        extra = self.overannounce.get(path, 0) if not head else 0
        data += b"x" * extra
        handler.send_response(206 if start else 200)
        handler.send_header("Content-Length", str(len(data) - start))
        handler.send_header("ETag", f'"{etag}"')
        handler.send_header("X-Repo-Commit", COMMIT)
        handler.send_header("Accept-Ranges", "bytes")
        if len(data) >= LFS_MIN_BYTES:
            handler.send_header("X-Linked-Etag", f'"{etag}"')
            handler.send_header("X-Linked-Size", str(len(data)))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if head:
            return
        stall = self.stall_after.get(path) if not start else None
        if stall is not None:  # the first bytes, then nothing until the hub closes: a hung transfer
            handler.wfile.write(data[:stall])
            handler.wfile.flush()
            self.released.wait(60)
            handler.close_connection = True
            return
        cut = self.cut_after.get(path) if not start else None
        if cut is not None:
            handler.wfile.write(data[:cut])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)  # the client sees a body cut short
            return
        drip = self.drip.get(path)
        if drip is not None:
            try:
                for i in range(start, len(data)):
                    if self.released.wait(drip):
                        return
                    handler.wfile.write(data[i : i + 1])
                    handler.wfile.flush()
            except OSError:  # the client gave up
                handler.close_connection = True
            return
        handler.wfile.write(data[start:])

    def _endless(self, handler, data: bytes) -> None:
        """The file, then bytes without end: no Content-Length, so only the client can stop it."""
        handler.send_response(200)
        handler.send_header("X-Repo-Commit", COMMIT)
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        try:
            handler.wfile.write(data)
            block = b"\0" * 65536
            for _ in range(16_384):  # 1 GiB at most, so a client that never stops still ends the test
                if self.released.is_set():
                    return
                handler.wfile.write(block)
        except OSError:  # the client cut it off
            pass
