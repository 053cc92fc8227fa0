"""A real herald node for the whole session: the binary named by ``HERALD_BIN`` (the Rust
test ``tests/python_client.rs`` sets it to the one cargo built), on port 0 with the local
backplane and a data directory of its own, killed at the end."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from herald_client import Herald

API_KEY = "python-client-test-key"
JWT_SECRET = "python-client-test-jwt-secret-of-32-bytes-or-more"
START_TIMEOUT = 30.0
LISTENING = re.compile(r"^herald listening node_id=(\S+) http=(\S+)(?: scheme=(\w+))?")


@dataclass(frozen=True)
class Node:
    url: str
    node_id: str
    api_key: str
    jwt_secret: str
    log: Path


def _binary() -> str:
    binary = os.environ.get("HERALD_BIN")
    if binary:
        return binary
    built = Path(__file__).resolve().parents[3] / "target" / "debug" / "herald"
    if built.exists():
        return str(built)
    pytest.fail("set HERALD_BIN to a herald binary (cargo build, then target/debug/herald)")


def _drain(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@contextmanager
def running_node(root: Path, *extra: str) -> Iterator[Node]:
    """A node on port 0 with its data in ``root``, started with ``extra`` arguments, killed on
    exit."""
    log = root / "herald.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("HERALD_")}
    env.update(HERALD_API_KEY=API_KEY, HERALD_JWT_SECRET=JWT_SECRET)
    command = [
        _binary(),
        "serve",
        "--http",
        "127.0.0.1:0",
        "--backplane",
        "local",
        "--data",
        str(root / "data"),
        "--store-sync",
        "normal",
        *extra,
    ]
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True
        )
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_drain, args=(process.stdout, lines), daemon=True).start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        found = None
        while found is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"herald did not say it was listening within {START_TIMEOUT} s")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"herald exited ({process.wait()}):\n{log.read_text()[-3000:]}")
            found = LISTENING.match(line)
        node_id, address, scheme = found.group(1), found.group(2), found.group(3) or "http"
        yield Node(f"{scheme}://{address}", node_id, API_KEY, JWT_SECRET, log)
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with running_node(tmp_path_factory.mktemp("herald")) as started:
        yield started


@pytest.fixture(scope="session")
def herald(node: Node) -> Iterator[Herald]:
    with Herald(node.url, node.api_key, jwt_secret=node.jwt_secret) as client:
        yield client


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Channel names (and keys) no other test uses: the node is shared by the session."""
    counter = iter(range(1_000_000))
    stamp = f"{time.monotonic_ns():x}"

    def make(prefix: str) -> str:
        return f"{prefix}-{stamp}-{next(counter)}"

    return make
