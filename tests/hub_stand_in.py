"""A stand-in for the Hugging Face hub on 127.0.0.1: serves model folders in the hub's HTTP layout, so
that huggingface_hub (pointed at it by `endpoint=` or HF_ENDPOINT) fetches them as it would from the hub.

What huggingface_hub 2.4 asks (read from its source: hf_api.model_info, list_repo_tree,
file_download.get_hf_file_metadata and hf_hub_download):
- GET  /api/models/{repo}/revision/{rev}[?blobs=true]  -> {"id", "sha", "siblings": [{"rfilename", "size"}], "gated"}
- GET  /api/models/{repo}/tree/{commit}?recursive=...  -> [{"type": "file", "path", "size", "oid"}]
- HEAD /{repo}/resolve/{commit}/{file}                 -> X-Repo-Commit, ETag, Content-Length
- GET  /{repo}/resolve/{commit}/{file}                 -> the bytes
Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) as the hub's do.
A gated model's files answer 401 without a token and 403 with a token other than `TOKEN`; its
/api/models page is public (as on the hub), with "gated": "manual".
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

TOKEN = "hf_stand_in_token"


@dataclass
class ServedModel:
    folder: Path
    commit: str
    gated: bool = False

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())


def folder_commit(folder: Path) -> str:
    """A commit id for a folder's content (40 hex digits, like a git commit)."""
    digest = hashlib.sha1()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class HubStandIn:
    def __init__(self):
        self.models: dict[str, ServedModel] = {}
        self.requests: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                stand_in._answer(self, body=False)

            def do_GET(self):
                stand_in._answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def serve(self, hub_id: str, folder: Path, commit: str | None = None, gated: bool = False) -> str:
        """Serve `folder` as `hub_id` at `commit` (default: from its content); returns the commit."""
        commit = commit or folder_commit(folder)
        self.models[hub_id] = ServedModel(Path(folder), commit, gated)
        return commit

    # -- the hub's answers ---------------------------------------------------------------------
    def _answer(self, handler, body: bool) -> None:
        url = urlparse(handler.path)
        path = unquote(url.path)
        self.requests.append(f"{handler.command} {path}")
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            self._api(handler, "/".join(parts[2:4]), parts[4], parts[5], body)
        elif len(parts) >= 5 and parts[2] == "resolve":
            self._file(handler, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), body)
        else:
            self._send(handler, 404, b"", error="RepoNotFound")

    def _resolve(self, handler, hub_id: str, revision: str) -> ServedModel | None:
        model = self.models.get(hub_id)
        if model is None:
            self._send(handler, 404, b"", error="RepoNotFound")
            return None
        if revision not in ("main", model.commit):
            self._send(handler, 404, b"", error="RevisionNotFound")
            return None
        return model

    def _api(self, handler, hub_id: str, kind: str, revision: str, body: bool) -> None:
        model = self._resolve(handler, hub_id, revision)
        if model is None:
            return
        sizes = {f: (model.folder / f).stat().st_size for f in model.files()}
        if kind == "revision":
            answer = {"id": hub_id, "sha": model.commit, "private": False, "gated": "manual" if model.gated else False,
                      "siblings": [{"rfilename": f, "size": n} for f, n in sizes.items()]}
        else:
            answer = [{"type": "file", "path": f, "size": n, "oid": _sha1(model.folder / f)} for f, n in sizes.items()]
        self._send(handler, 200, json.dumps(answer).encode(), body=body, content_type="application/json")

    def _file(self, handler, hub_id: str, revision: str, name: str, body: bool) -> None:
        model = self._resolve(handler, hub_id, revision)
        if model is None:
            return
        if model.gated:
            auth = handler.headers.get("Authorization")
            if auth is None:
                return self._send(handler, 401, b"", error="GatedRepo")
            if auth != f"Bearer {TOKEN}":
                return self._send(handler, 403, b"", error="GatedRepo")
        path = model.folder / name
        if not path.is_file():
            return self._send(handler, 404, b"", error="EntryNotFound")
        data = path.read_bytes()
        self._send(handler, 200, data, body=body, headers={
            "X-Repo-Commit": model.commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'})

    @staticmethod
    def _send(handler, status: int, data: bytes, body: bool = True, error: str | None = None,
              content_type: str = "application/octet-stream", headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        if error:
            handler.send_header("X-Error-Code", error)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()
