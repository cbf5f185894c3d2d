"""`relayq batch`: the CLI as a subprocess, over HTTP, against the shared stack.

The last test puts a TCP proxy between the CLI and the API and drops it for
a few seconds while the CLI follows a batch, as a flaky network would.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

from relayq.cli.api_client import ApiClient, create_batch_retrying
from relayq.cli.batch_input import write_requests
from tests.batches import jsonl, request_line
from tests.conftest import KeyFactory
from tests.services import free_port
from tests.stack import ROOT, Stack, wait_until


@pytest.fixture(autouse=True)
def _sqlite_only(backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("the CLI speaks HTTP only; test_batches.py covers the API on both databases")


Completed = subprocess.CompletedProcess[str]


@dataclass
class Cli:
    """Runs ``python -m relayq.cli batch …`` as one tenant of the shared stack."""

    env: dict[str, str]
    key: str
    api_url: str
    tmp: Path

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "relayq.cli", "batch", *args]

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            cwd=ROOT,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )

    def file(self, name: str, lines: list[Any]) -> Path:
        path = self.tmp / name
        path.write_bytes(jsonl(lines))
        return path

    def api(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=10)


def _bare_env(tmp: Path) -> dict[str, str]:
    """The environment without any relayq key or URL, and no dev stack's key to find."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"RELAYQ_API_KEY", "RELAYQ_API_URL", "RELAYQ_DEV_API_KEY"}
    }
    return {**env, "COLUMNS": "100", "RELAYQ_DATA_DIR": str(tmp / "no-dev-stack")}


@pytest.fixture
def cli(stack: Stack, make_key: KeyFactory, tmp_path: Path) -> Cli:
    key = make_key()
    env = {**_bare_env(tmp_path), "RELAYQ_API_URL": stack.base_url, "RELAYQ_API_KEY": key}
    return Cli(env=env, key=key, api_url=stack.base_url, tmp=tmp_path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lines_are_converted_one_for_one_and_batch_lines_go_as_they_are() -> None:
    as_is = json.dumps(request_line("x")).encode()
    source = io.BytesIO(as_is + b"\n\n{not json\r\n" + b'{"prompt": "hi", "max_tokens": 3}\n')
    sink = io.BytesIO()

    assert write_requests(source, sink, model="mock") == 3

    first, blank, broken, converted, end = sink.getvalue().split(b"\n")
    assert (first, blank, broken, end) == (as_is, b"", b"{not json", b"")
    assert json.loads(converted) == {
        "custom_id": "line-4",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"max_tokens": 3, "messages": [{"role": "user", "content": "hi"}], "model": "mock"},
    }


def test_submit_waits_and_saves_the_results_and_the_errors(cli: Cli) -> None:
    refused = request_line("refused", mock={"fault": "error", "status": 400})
    path = cli.file("prompts.jsonl", [request_line(f"req-{i}") for i in range(5)] + [refused])
    output = cli.tmp / "results.jsonl"

    done = cli.run("submit", str(path), "--wait", "--output", str(output))

    assert done.returncode == 0, done.stderr
    batch_id = done.stdout.strip()
    assert batch_id.startswith("batch_")
    results = read_jsonl(output)
    assert [r["custom_id"] for r in results] == [f"req-{i}" for i in range(5)]
    assert all(r["response"]["status_code"] == 200 for r in results)
    [error] = read_jsonl(cli.tmp / "results.errors.jsonl")
    assert (error["custom_id"], error["response"]["status_code"]) == ("refused", 400)
    assert f"batch {batch_id} completed" in done.stderr
    assert "6 requests, 5 succeeded, 1 failed" in done.stderr
    assert "/6 done" in done.stderr  # the progress, as plain lines


def test_simple_lines_become_batch_requests(cli: Cli) -> None:
    path = cli.file(
        "simple.jsonl",
        [
            {"prompt": "Hello"},
            {"custom_id": "mine", "messages": [{"role": "user", "content": "Hi"}]},
            b"",
            {"prompt": "Named", "model": "mock", "max_tokens": 5},
        ],
    )
    output = cli.tmp / "out.jsonl"

    done = cli.run("submit", str(path), "--model", "mock", "--output", str(output))

    assert done.returncode == 0, done.stderr
    results = read_jsonl(output)
    assert [r["custom_id"] for r in results] == ["line-1", "mine", "line-4"]
    assert all(r["response"]["body"]["object"] == "chat.completion" for r in results)
    assert not (cli.tmp / "out.errors.jsonl").exists()


def test_a_bad_line_fails_the_batch_with_its_line_number(cli: Cli) -> None:
    path = cli.file("bad.jsonl", [request_line("ok"), request_line("typo", model="no-such-model")])

    done = cli.run("submit", str(path), "--wait")

    assert done.returncode == 1, done.stderr
    assert "failed" in done.stderr
    assert "line 2: model_not_found:" in done.stderr
    assert "no-such-model" in done.stderr


def test_a_line_without_a_model_is_refused_before_uploading(cli: Cli) -> None:
    path = cli.file("nomodel.jsonl", [{"prompt": "a", "model": "mock"}, {"prompt": "b"}])

    done = cli.run("submit", str(path))

    assert done.returncode == 1
    assert 'line 2: no "model"' in done.stderr
    assert "--model" in done.stderr
    assert done.stdout == ""  # no batch was created


@pytest.mark.slow
def test_cancel_then_status_reports_a_cancelled_batch(cli: Cli) -> None:
    path = cli.file("idle.jsonl", [request_line(f"idle-{i}", model="mock-idle") for i in range(3)])
    submitted = cli.run("submit", str(path))
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()

    cancelled = cli.run("cancel", batch_id)
    followed = cli.run("status", batch_id, "--wait")
    shown = cli.run("status", batch_id)

    assert cancelled.returncode == 0, cancelled.stderr
    assert f"batch {batch_id} is cancell" in cancelled.stderr
    assert followed.returncode == 4, followed.stderr
    assert "cancelled" in followed.stderr
    assert shown.returncode == 0
    assert shown.stdout.startswith(f"{batch_id}  cancelled")
    again = cli.run("results", batch_id)
    assert again.returncode == 1
    assert "has no output file" in again.stderr


@pytest.mark.slow
def test_list_and_results(cli: Cli) -> None:
    path = cli.file("two.jsonl", [request_line("a"), request_line("b")])
    submitted = cli.run("submit", str(path), "--wait")
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()

    listed = cli.run("list", "--limit", "5")
    printed = cli.run("results", batch_id)
    saved = cli.run("results", batch_id, "--output", str(cli.tmp / "saved.jsonl"))
    no_errors = cli.run("results", batch_id, "--errors")

    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if batch_id in line]
    assert "completed" in row
    assert "2/2" in row
    assert printed.returncode == 0, printed.stderr
    assert [json.loads(line)["custom_id"] for line in printed.stdout.splitlines()] == ["a", "b"]
    assert saved.returncode == 0, saved.stderr
    assert [r["custom_id"] for r in read_jsonl(cli.tmp / "saved.jsonl")] == ["a", "b"]
    assert no_errors.returncode == 1
    assert "has no error file" in no_errors.stderr


def test_keys_missing_or_refused_are_explained(cli: Cli) -> None:
    bare = {**_bare_env(cli.tmp), "RELAYQ_API_URL": cli.api_url}

    missing = cli.run("list", env=bare)
    refused = cli.run("list", "--api-key", "rq-not-a-key", env=bare)
    dev_dir = cli.tmp / "dev"
    dev_dir.mkdir()
    (dev_dir / "dev-api-key").write_text(cli.key + "\n")
    with_dev_key = cli.run("list", env={**bare, "RELAYQ_DATA_DIR": str(dev_dir)})

    assert missing.returncode == 5
    assert "no API key" in missing.stderr
    assert "--api-key" in missing.stderr
    assert "RELAYQ_API_KEY" in missing.stderr
    assert refused.returncode == 5
    assert "error:" in refused.stderr
    assert "HTTP 401" in refused.stderr
    assert with_dev_key.returncode == 0, with_dev_key.stderr


class TcpProxy:
    """Forwards a loopback port to another; ``stop`` drops the listener and every
    connection at once, as a network outage would, and ``start`` comes back on
    the same port."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._target = target_port
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._acceptor: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR
        self._listener.settimeout(0.1)
        self._acceptor = threading.Thread(target=self._accept, args=(self._listener,))
        self._acceptor.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update({client, upstream})
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    # OSError: the proxy was stopped, or the other side went away.
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def test_following_survives_a_dropped_connection(cli: Cli) -> None:
    slow = {"latency_ms": 1500}
    lines = [request_line(f"r-{i}", mock=slow if i % 2 else {}) for i in range(20)]
    path = cli.file("slow.jsonl", lines)
    output = cli.tmp / "results.jsonl"
    stdout, stderr = cli.tmp / "cli.out", cli.tmp / "cli.err"

    with TcpProxy(int(cli.api_url.rsplit(":", 1)[1])) as proxy, stdout.open("wb") as out:
        with stderr.open("wb") as err:
            args = ["submit", str(path), "--wait", "--output", str(output)]
            process = subprocess.Popen(
                cli.command(*args, "--api-url", proxy.url),
                cwd=ROOT,
                env=cli.env,
                stdout=out,
                stderr=err,
            )
        try:
            wait_until(lambda: stdout.read_text().strip(), timeout=60)  # the batch exists
            proxy.stop()
            wait_until(lambda: "reconnecting" in stderr.read_text(), timeout=30)
            time.sleep(3)  # down for a few polls more
            proxy.start()
            returncode = process.wait(timeout=90)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    log = stderr.read_text()
    assert returncode == 0, log
    assert "reconnecting" in log
    assert "reconnected" in log
    assert "20 requests, 20 succeeded, 0 failed" in log
    results = read_jsonl(output)
    assert sorted(r["custom_id"] for r in results) == sorted(f"r-{i}" for i in range(20))
    with cli.api() as api:
        batch = api.get(f"/v1/batches/{stdout.read_text().strip()}").json()
    assert batch["status"] == "completed"


class LosesFirstAnswer(httpx.BaseTransport):
    """The network between the CLI and the API: the first create's answer is lost on the way."""

    def __init__(self) -> None:
        self._real = httpx.HTTPTransport()
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._real.handle_request(request)
        if request.method == "POST" and request.url.path == "/v1/batches" and not self.lost:
            response.read()
            response.close()
            self.lost += 1
            raise httpx.ReadError("connection reset while reading the answer", request=request)
        return response

    def close(self) -> None:
        self._real.close()


def test_a_create_whose_answer_is_lost_is_retried_into_one_batch(
    stack: Stack, make_key: KeyFactory
) -> None:
    network = LosesFirstAnswer()
    retries: list[str] = []
    with ApiClient(base_url=stack.base_url, api_key=make_key(), transport=network) as client:
        uploaded = client.upload_batch_file(io.BytesIO(jsonl([request_line("a")])), filename="a")
        batch = create_batch_retrying(
            client,
            input_file_id=uploaded.id,
            completion_window="24h",
            metadata=None,
            on_retry=lambda reason, _delay: retries.append(reason),
            sleep=lambda _seconds: None,
        )
        listed = client.list_batches(limit=10)
    assert network.lost == 1
    assert len(retries) == 1
    assert [b.id for b in listed.data] == [batch.id]
