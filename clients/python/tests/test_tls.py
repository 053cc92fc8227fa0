"""Against a node that serves HTTPS with a certificate of a private CA (made here with the
``openssl`` command): trusted through ``verify=<CA file>``, refused without it."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Node, running_node

from herald_client import AsyncHerald, Herald, HeraldConnectionError


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _private_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for 127.0.0.1: (CA certificate, certificate, key)."""
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, request, cert = directory / "node.key", directory / "node.csr", directory / "node.pem"
    extensions = directory / "san.ext"
    extensions.write_text("subjectAltName = IP:127.0.0.1\n")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
             "-out", str(ca_cert), "-days", "2", "-subj", "/CN=herald test CA")  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request),
             "-subj", "/CN=127.0.0.1")  # fmt: skip
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca_cert), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", "2",
             "-extfile", str(extensions))  # fmt: skip
    return ca_cert, cert, key


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Path]]:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make the test certificates")
    root = tmp_path_factory.mktemp("herald-tls")
    ca, cert, key = _private_ca(root)
    with running_node(root, "--tls-cert", str(cert), "--tls-key", str(key)) as node:
        yield node, ca


def test_a_tls_node_is_reached_with_its_ca_file(tls_node: tuple[Node, Path]) -> None:
    node, ca = tls_node
    assert node.url.startswith("https://")
    # A path as a str; the async test passes a Path.
    with Herald(node.url, node.api_key, verify=str(ca)) as herald:
        published = herald.publish("tls-news", {"type": "item", "n": 1})
        page = herald.history("tls-news")
    assert published.id
    assert [event["n"] for event in page.events] == [1]


def test_a_certificate_that_does_not_verify_is_a_connection_error(
    tls_node: tuple[Node, Path],
) -> None:
    node, _ = tls_node
    with Herald(node.url, node.api_key) as herald, pytest.raises(HeraldConnectionError) as raised:
        herald.publish("tls-refused", {"type": "item"})
    assert node.url in str(raised.value)
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
    assert raised.value.sent is False


def test_the_async_client_takes_the_ca_file_too(tls_node: tuple[Node, Path]) -> None:
    node, ca = tls_node

    async def publish() -> str:
        async with AsyncHerald(node.url, node.api_key, verify=ca) as herald:
            return (await herald.publish("tls-async", {"type": "item"})).id

    assert asyncio.run(publish())
