"""OPC-UA security for real: Basic256Sha256 SignAndEncrypt with certificates from a generated
test-site CA, a user and password from the environment, and the refusals a site relies on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from plant import load_plant
from plant.config import OpcuaMachine, OpcuaSecurity, PlantDescription
from plant.interface import ConnectError
from plant.opcua import OpcuaAgent, TestSite, make_test_site
from plant.packml import Command, State
from plant.testing import on_free_ports
from sim.serve import ServerSecurity
from tests._live import Serving, serving

PASSWORD_ENV = "ATELIER_TEST_CNC_PASSWORD"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> TestSite:
    return make_test_site(tmp_path_factory.mktemp("site-pki"))


def secured(site: TestSite, **over: object) -> OpcuaSecurity:
    fields: dict[str, object] = {
        "policy": "Basic256Sha256",
        "mode": "SignAndEncrypt",
        "username": "operator",
        "password_env": PASSWORD_ENV,
        "certificate_file": str(site.client_cert),
        "private_key_file": str(site.client_key),
        "server_certificate_file": str(site.server_cert),
    }
    fields.update(over)
    return OpcuaSecurity.model_validate(fields)


@pytest.fixture(scope="module")
def secure_plant(site: TestSite) -> Iterator[tuple[Serving, PlantDescription]]:
    os.environ[PASSWORD_ENV] = PASSWORD
    base = on_free_ports(load_plant())
    cnc = base.machines["cnc_1"]
    assert isinstance(cnc, OpcuaMachine)
    plant = base.model_copy(update={"machines": {"cnc_1": cnc.model_copy(update={"security": secured(site)})}})
    s = serving(
        "secure",
        plant,
        ServerSecurity(
            certificate_file=site.server_cert, private_key_file=site.server_key, trusted_dir=site.trusted_dir
        ),
    )
    yield s, plant
    os.environ.pop(PASSWORD_ENV, None)


def machine(plant: PlantDescription, **security: object) -> OpcuaMachine:
    m = plant.machines["cnc_1"]
    assert isinstance(m, OpcuaMachine)
    if not security:
        return m
    return m.model_copy(update={"security": m.security.model_copy(update=security)})


async def test_sign_and_encrypt_with_user_and_password(secure_plant: tuple[Serving, PlantDescription]) -> None:
    live, plant = secure_plant
    live.reset()
    async with OpcuaAgent("cnc_1", machine(plant)) as agent:
        client = agent._client
        assert client is not None
        assert client.security_policy.URI.endswith("#Basic256Sha256")
        assert client.security_policy.Mode.name == "SignAndEncrypt"
        await agent.command(Command.RESET)
        st = await agent.wait_for_state({State.IDLE}, 5)
        assert st.state == State.IDLE
        await agent.write("program", 7)
        assert await agent.read("program") == 7


async def test_wrong_password_is_refused(
    secure_plant: tuple[Serving, PlantDescription], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, plant = secure_plant
    monkeypatch.setenv("ATELIER_TEST_WRONG_PASSWORD", "hunter2")
    agent = OpcuaAgent("cnc_1", machine(plant, password_env="ATELIER_TEST_WRONG_PASSWORD"))
    with pytest.raises(ConnectError, match="refused the session: BadUserAccessDenied"):
        await agent.connect()


async def test_missing_password_variable_is_named(secure_plant: tuple[Serving, PlantDescription]) -> None:
    _, plant = secure_plant
    agent = OpcuaAgent("cnc_1", machine(plant, password_env="ATELIER_TEST_NOT_SET"))
    with pytest.raises(ConnectError, match=r"environment variable ATELIER_TEST_NOT_SET .* is not set"):
        await agent.connect()


async def test_an_unsecured_client_is_refused(secure_plant: tuple[Serving, PlantDescription]) -> None:
    _, plant = secure_plant
    agent = OpcuaAgent("cnc_1", machine(plant).model_copy(update={"security": OpcuaSecurity()}), connect_timeout_s=2)
    with pytest.raises(ConnectError, match="No matching endpoints"):
        await agent.connect()


async def test_a_certificate_from_another_ca_is_refused(
    secure_plant: tuple[Serving, PlantDescription], tmp_path: Path
) -> None:
    _, plant = secure_plant
    stranger = make_test_site(tmp_path / "stranger")
    agent = OpcuaAgent(
        "cnc_1",
        machine(plant, certificate_file=str(stranger.client_cert), private_key_file=str(stranger.client_key)),
        connect_timeout_s=2,
    )
    with pytest.raises(ConnectError, match="refused the session: BadCertificateUntrusted"):
        await agent.connect()


def test_security_config_needs_certificates_and_paired_credentials() -> None:
    with pytest.raises(ValueError, match="needs certificate_file and private_key_file"):
        OpcuaSecurity(policy="Basic256Sha256", mode="Sign")
    with pytest.raises(ValueError, match="username and password_env go together"):
        OpcuaSecurity(username="operator")
