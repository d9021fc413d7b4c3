"""``atelier console --tls-cert FILE --tls-key FILE``: the console over HTTPS (uvicorn with a
certificate made here, signed by a test CA), Secure cookies and HSTS; the options checked
before anything starts; loopback by default."""

from __future__ import annotations

import inspect
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from llm_coordinator import cli_console
from llm_coordinator.cli_console import console_app, forwarded_options, is_loopback, tls_options
from llm_coordinator.console.app import create_app
from plant.config import PlantDescription
from plant.opcua.certs import make_test_site

from ._live import uvicorn_thread
from .conftest import PASSWORD, build_backend, make_users


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA and a server certificate for localhost and 127.0.0.1, as PEM files."""
    d = tmp_path_factory.mktemp("pki")
    site = make_test_site(d / "site")

    def pem(der: Path, out: Path) -> Path:
        out.write_bytes(x509.load_der_x509_certificate(der.read_bytes()).public_bytes(serialization.Encoding.PEM))
        return out

    other = make_test_site(d / "other")
    return {
        "ca": pem(site.ca_cert, d / "ca.pem"),
        "cert": pem(site.server_cert, d / "server.pem"),
        "key": site.server_key,
        "other_key": other.server_key,
    }


def test_tls_options_check_the_files_before_anything_starts(pki: dict[str, Path], tmp_path: Path) -> None:
    assert tls_options(None, None) == {}
    assert tls_options(pki["cert"], pki["key"]) == {"ssl_certfile": str(pki["cert"]), "ssl_keyfile": str(pki["key"])}
    with pytest.raises(ValueError, match="go together"):
        tls_options(pki["cert"], None)
    with pytest.raises(ValueError, match="go together"):
        tls_options(None, pki["key"])
    with pytest.raises(ValueError, match="cannot serve TLS"):
        tls_options(tmp_path / "missing.pem", pki["key"])
    with pytest.raises(ValueError, match="cannot serve TLS"):
        tls_options(pki["cert"], pki["other_key"])  # a key of another certificate


def test_loopback_is_the_default_and_recognised() -> None:
    assert inspect.signature(cli_console.serve).parameters["host"].default == "127.0.0.1"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.1.2.3")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.2") and not is_loopback("console.plant.example")


class _FakeSite:
    def __init__(self, **kw: Any) -> None:
        self.kw = kw
        self.app = type(
            "App", (), {"state": type("State", (), {"users": type("U", (), {"users": lambda s: [1]})()})()}
        )()
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


def test_the_command_serves_https_with_secure_cookies(
    pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What `atelier console --twin --tls-cert --tls-key` hands to the site and to uvicorn."""
    import llm_coordinator.console.wiring as wiring

    sites: list[_FakeSite] = []
    runs: list[dict[str, Any]] = []

    def fake_build_site(*args: Any, **kw: Any) -> _FakeSite:
        sites.append(_FakeSite(**kw))
        return sites[-1]

    monkeypatch.setattr(wiring, "build_site", fake_build_site)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append(kw))
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'site.db'}"
    args = ["--twin", "--db", db, "--state-dir", str(tmp_path / "state")]
    r = runner.invoke(console_app, [*args, "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"])])
    assert r.exit_code == 0, r.output
    assert sites[-1].kw["secure_cookies"] is True and sites[-1].started and sites[-1].stopped
    assert runs[-1]["ssl_certfile"] == str(pki["cert"]) and runs[-1]["ssl_keyfile"] == str(pki["key"])
    assert runs[-1]["host"] == "127.0.0.1" and "https://127.0.0.1:8765/" in r.output
    assert runs[-1]["proxy_headers"] is False  # no client's X-Forwarded-For is believed
    r = runner.invoke(console_app, [*args, "--proxy", "10.0.0.5"])
    assert r.exit_code == 0 and runs[-1]["proxy_headers"] is True and runs[-1]["forwarded_allow_ips"] == "10.0.0.5"
    # plain HTTP on loopback: no cookies marked Secure by the command (the app still marks them
    # Secure on any request that came over HTTPS), no warning
    r = runner.invoke(console_app, args)
    assert r.exit_code == 0 and sites[-1].kw["secure_cookies"] is False and "ssl_certfile" not in runs[-1]
    assert "warning" not in r.output
    # another address without TLS: a warning
    r = runner.invoke(console_app, [*args, "--host", "0.0.0.0"])
    assert r.exit_code == 0 and "cross the network in clear" in " ".join(r.output.split())
    # half the options, or a bad file: exit 2 before anything is built
    n = len(sites)
    r = runner.invoke(console_app, [*args, "--tls-cert", str(pki["cert"])])
    assert r.exit_code == 2 and "go together" in " ".join(r.output.split())
    r = runner.invoke(console_app, [*args, "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["other_key"])])
    assert r.exit_code == 2 and "cannot serve TLS" in " ".join(r.output.split())
    assert len(sites) == n


@pytest.fixture
def https_console(pki: dict[str, Path], tmp_path: Path, demo_plant: PlantDescription) -> Iterator[str]:
    """The console's app served by uvicorn over TLS on a free loopback port (the app is made as
    for plain HTTP: the Secure flag comes from the request's scheme)."""
    backend = build_backend(demo_plant, tmp_path)
    users = make_users(tmp_path / "atelier.db")
    try:
        with uvicorn_thread(create_app(backend, users), **tls_options(pki["cert"], pki["key"])) as port:
            yield f"127.0.0.1:{port}"
    finally:
        backend.store.engine.dispose()
        users.engine.dispose()


def test_https_login_gets_a_secure_cookie_and_hsts(https_console: str, pki: dict[str, Path]) -> None:
    trust = ssl.create_default_context(cafile=str(pki["ca"]))
    with httpx.Client(base_url=f"https://{https_console}", verify=trust) as client:
        r = client.post("/api/session", json={"name": "sam", "password": PASSWORD})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"]
        assert (
            "atelier_session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        )
        assert r.headers["strict-transport-security"].startswith("max-age=")
        me = client.get("/api/me")
        assert me.status_code == 200 and me.json()["name"] == "sam"
        page = client.get("/plant")
        assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    # the certificate is checked: a client that does not trust the test CA is refused
    with httpx.Client(base_url=f"https://{https_console}") as untrusting, pytest.raises(httpx.ConnectError):
        untrusting.get("/login")
    # and plain HTTP to the TLS port gets nothing
    with httpx.Client(base_url=f"http://{https_console}") as plain, pytest.raises(httpx.HTTPError):
        plain.get("/login")


def test_a_client_cannot_choose_the_address_its_login_limit_counts(
    tmp_path: Path, demo_plant: PlantDescription
) -> None:
    """Served as `atelier console` serves it (no --proxy), failures sent with a new
    X-Forwarded-For each time still count against the client's own address (the review sprayed
    60 names that way with no 429 and 60 audit rows)."""
    backend = build_backend(demo_plant, tmp_path)
    users = make_users(tmp_path / "atelier.db")
    try:
        with (
            uvicorn_thread(create_app(backend, users), **forwarded_options(None)) as port,
            httpx.Client(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            codes = [
                client.post(
                    "/api/session",
                    json={"name": f"user{i}", "password": "wrong"},
                    headers={"X-Forwarded-For": f"10.9.{i}.{i}"},
                ).status_code
                for i in range(40)
            ]
        assert 429 in codes, codes
        failed = [a for a in backend.store.audit_rows(None) if a.action.startswith("login_f")]
        assert len(failed) <= 3, [a.action for a in failed]
    finally:
        backend.store.engine.dispose()
        users.engine.dispose()
