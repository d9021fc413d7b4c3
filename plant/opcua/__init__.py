"""The OPC-UA machine agent (asyncua): the only client-side module that imports asyncua.

:class:`OpcuaAgent` reaches a machine by the node ids of its tag map (no browsing), reads and
writes many tags in one request, follows ``State`` and ``CommandAck`` by a subscription, and
speaks Basic256Sha256 (Sign or SignAndEncrypt) with a username and password when the tag map's
``security`` asks for it. The password comes from the environment variable the map names.

    agent = OpcuaAgent(name, plant.machines[name])
    async with agent:
        await agent.command(Command.RESET)
        await agent.wait_for_state({State.IDLE}, timeout_s=5)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.subscription import Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from plant._agent import NetworkAgent, TransportLost
from plant.codec import CodecError, RawValue, from_raw
from plant.config import OpcuaMachine, OpcuaTag
from plant.interface import ConnectError, MachineError, TagError, TagValue
from plant.opcua._types import DATA_TYPE_IDS, VARIANT_TYPES
from plant.opcua.certs import TestSite, make_test_site

__all__ = ["OpcuaAgent", "TestSite", "make_test_site"]

log = logging.getLogger(__name__)

#: Tags followed by the subscription (others are read on demand).
SUBSCRIBED = ("state", "command_ack")

_MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}


class _Handler:
    """asyncua subscription handler: notes changes and wakes the waiters."""

    def __init__(self, agent: OpcuaAgent, generation: int) -> None:
        self.agent = agent
        self.generation = generation

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        tag = self.agent._node_tag.get(node.nodeid)
        if tag is not None:
            self.agent._notified(tag, val)

    def status_change_notification(self, status: Any) -> None:
        self.agent._transport_lost(f"subscription status {status}", self.generation)


class OpcuaAgent(NetworkAgent):
    """A machine over OPC-UA. See :class:`plant._agent.NetworkAgent` for timeouts and
    reconnects; ``publishing_interval_ms`` is the subscription's publishing interval."""

    machine: OpcuaMachine

    def __init__(self, name: str, machine: OpcuaMachine, *, publishing_interval_ms: float = 10.0, **kw: Any) -> None:
        super().__init__(name, machine, **kw)
        self.publishing_interval_ms = publishing_interval_ms
        self._client: Client | None = None
        self._sub: Subscription | None = None
        self._node_ids = {t: ua.NodeId.from_string(tag.node_id) for t, tag in machine.tags.items()}
        self._node_tag = {nid: t for t, nid in self._node_ids.items()}
        self._changed = {t: asyncio.Event() for t in SUBSCRIBED}

    # ------------------------------------------------------------------ transport

    async def _open(self) -> None:
        m = self.machine
        client = Client(m.endpoint, timeout=self.request_timeout_s, watchdog_intervall=0.5)
        client.session_timeout = 600_000  # ms; what asyncua servers grant at most
        client.name = client.description = f"Atelier agent for {self.name}"
        client.application_uri = "urn:atelier:agent"
        sec = m.security
        if sec.username is not None and sec.password_env is not None:
            password = os.environ.get(sec.password_env)
            if password is None:
                raise ConnectError(
                    self.name, f"environment variable {sec.password_env} (the OPC-UA password) is not set"
                )
            client.set_user(sec.username)
            client.set_password(password)
        if sec.policy == "Basic256Sha256":
            assert sec.certificate_file is not None and sec.private_key_file is not None  # the config checks it
            missing = [f for f in (sec.certificate_file, sec.private_key_file, sec.server_certificate_file) if f]
            missing = [f for f in missing if not await asyncio.to_thread(Path(f).is_file)]
            if missing:
                raise ConnectError(self.name, f"security file {', '.join(missing)} does not exist")
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                sec.certificate_file,
                sec.private_key_file,
                server_certificate=sec.server_certificate_file,
                mode=_MODES[sec.mode],
            )

        gen = self._generation

        async def lost(exc: Exception) -> None:
            self._transport_lost(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, gen)

        client.connection_lost_callback = lost
        try:
            await client.connect()
        except UaStatusCodeError as exc:
            raise ConnectError(self.name, f"{m.endpoint} refused the session: {_status(exc)}") from None
        except (OSError, ConnectionError, TimeoutError) as exc:
            raise TransportLost(f"{type(exc).__name__}: {exc}") from None
        except UaError as exc:  # no endpoint with the security the map asks for, and the like
            raise ConnectError(self.name, f"{m.endpoint}: {exc}") from None
        self._client = client
        await self._check_nodes(client)
        handler = _Handler(self, gen)
        sub = await client.create_subscription(self.publishing_interval_ms, handler)
        await sub.subscribe_data_change([client.get_node(self._node_ids[t]) for t in SUBSCRIBED if t in self.tags])
        self._sub = sub

    async def _check_nodes(self, client: Client) -> None:
        """Every node of the map exists and has the data type the map declares."""
        names = list(self.tags)
        dvs = await client.uaclient.read_attributes([self._node_ids[t] for t in names], AttributeIds.DataType)
        missing, wrong = [], []
        for t, dv in zip(names, dvs, strict=True):
            tag = self.tags[t]
            assert isinstance(tag, OpcuaTag)
            if dv.StatusCode is not None and not dv.StatusCode.is_good():
                missing.append(f"{t} ({tag.node_id}: {dv.StatusCode.name})")
            elif dv.Value is not None and dv.Value.Value != DATA_TYPE_IDS[tag.data_type]:
                wrong.append(f"{t} ({tag.node_id} is {dv.Value.Value.to_string()}, the map says {tag.data_type})")
        if missing or wrong:
            parts = []
            if missing:
                parts.append(f"the server at {self.machine.endpoint} has no node for tag {', '.join(missing)}")
            if wrong:
                parts.append(f"wrong data type for tag {', '.join(wrong)}")
            raise ConnectError(self.name, "; ".join(parts))

    async def _close(self) -> None:
        client, self._client, self._sub = self._client, None, None
        if client is None:
            return
        client.connection_lost_callback = None
        try:
            await asyncio.wait_for(client.disconnect(), 1.0)
        except Exception:  # a dead connection cannot be closed politely
            with contextlib.suppress(Exception):
                client.uaclient.disconnect_socket()

    def _live(self) -> Client:
        if self._client is None:
            raise TransportLost("not connected")
        return self._client

    async def _read(self, names: list[str]) -> dict[str, TagValue]:
        client = self._live()
        try:
            dvs = await client.uaclient.read_attributes([self._node_ids[n] for n in names], AttributeIds.Value)
        except (OSError, ConnectionError, UaStatusCodeError) as exc:
            raise TransportLost(f"{type(exc).__name__}: {exc}") from None
        out: dict[str, TagValue] = {}
        for n, dv in zip(names, dvs, strict=True):
            if dv.StatusCode is not None and not dv.StatusCode.is_good():
                raise MachineError(self.name, f"tag {n!r}: the server answered {dv.StatusCode.name}")
            try:
                out[n] = from_raw(self.tags[n], dv.Value.Value if dv.Value is not None else None)  # type: ignore[arg-type]
            except CodecError as exc:
                raise MachineError(self.name, f"tag {n!r}: {exc}") from None
        return out

    async def _write(self, raw: dict[str, RawValue]) -> None:
        client = self._live()
        names = list(raw)
        dvs = [ua.DataValue(ua.Variant(raw[n], VARIANT_TYPES[self.tags[n].data_type])) for n in names]
        try:
            results = await client.uaclient.write_attributes(
                [self._node_ids[n] for n in names], dvs, AttributeIds.Value
            )
        except (OSError, ConnectionError, UaStatusCodeError) as exc:
            raise TransportLost(f"{type(exc).__name__}: {exc}") from None
        for n, st in zip(names, results, strict=True):
            if not st.is_good():
                raise TagError(self.name, n, f"the machine refused the write: {st.name}")

    # ------------------------------------------------------------------ subscription

    def _notified(self, tag: str, value: Any) -> None:
        ev = self._changed.get(tag)
        if ev is not None:
            ev.set()

    async def _wait_change(self, names: tuple[str, ...], timeout_s: float) -> None:
        events = [self._changed[n] for n in names if n in self._changed]
        if not events:
            await super()._wait_change(names, timeout_s)
            return
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            # A lost connection also ends the wait (the caller re-reads once it is back).
            waits.append(asyncio.ensure_future(self._lost.wait()))
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        for e in events:
            e.clear()
        if not self.connected:
            # Wait for the reconnect (the next read waits as well); do not spin.
            await asyncio.sleep(min(timeout_s, 0.05))


def _status(exc: UaStatusCodeError) -> str:
    try:
        return ua.StatusCode(exc.code).name
    except Exception:
        return str(exc)
