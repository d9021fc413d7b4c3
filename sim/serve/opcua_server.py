"""The twin's machines served over OPC-UA (asyncua), as a PLC's server would serve them.

One :class:`OpcuaTwinServer` per endpoint. Its address space is what a plant engineer expects
to browse: under ``Objects``, one object per machine (named as in the plant file) holding a variable per tag of
the machine's tag map, with the node ids, data types and access the map declares, and one
method per PackML command (``Reset``, ``Start``, ``Stop``...) that returns the machine's reason
when it refuses.

Values come from the machine's :class:`~sim.serve.plc.MachinePlc` (which follows the twin);
values a client writes go to the PLC (a new ``CommandSeq`` runs the command handshake) before
the write is answered.

Like a PLC's server, it refuses a write the PLC would not take, per node and leaving the value
as it was (:func:`~sim.serve.plc.check_client_write`, the rules our agents check before they
send): ``BadNotWritable`` for a tag that is not writable, ``BadTypeMismatch`` for a value that
is not of the tag's data type (or an array), ``BadOutOfRange`` for one outside the tag's
``min``/``max``, ``BadWriteNotSupported`` for a value with a status that is not good. The
check replaces asyncua's write service (:class:`_CheckedWrites`), the one place that sees
every client write before it reaches the address space and can answer each node.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.common.node import Node
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.address_space import AddressSpace, AttributeService
from asyncua.server.internal_server import InternalServer
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uatypes import UInt32

from plant.codec import CodecError, RawValue, from_raw, to_raw
from plant.config import OpcuaMachine, OpcuaTag
from plant.interface import TagValue
from plant.opcua._types import VARIANT_TYPES
from plant.opcua.certs import SERVER_URI
from plant.packml import Command
from sim.serve.plc import Changes, MachinePlc, WriteRefused, check_client_write, client_writable

log = logging.getLogger(__name__)

#: The methods of every machine object, in the order a client sees them.
METHODS: dict[str, Command] = {
    "Reset": Command.RESET,
    "Start": Command.START,
    "Stop": Command.STOP,
    "Hold": Command.HOLD,
    "Unhold": Command.UNHOLD,
    "Abort": Command.ABORT,
    "Clear": Command.CLEAR,
    "OpenDoor": Command.OPEN_DOOR,
    "CloseDoor": Command.CLOSE_DOOR,
}

_POLICIES = {
    ("None", "None"): ua.SecurityPolicyType.NoSecurity,
    ("Basic256Sha256", "Sign"): ua.SecurityPolicyType.Basic256Sha256_Sign,
    ("Basic256Sha256", "SignAndEncrypt"): ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}


@dataclass(frozen=True)
class ServerSecurity:
    """The twin server's own certificate, key and trusted clients, for secured endpoints.

    ``trusted_dir`` holds the certificates (or the CA) of clients the server accepts; without
    it, any client certificate is accepted (a test site). Site files, never in the plant YAML.
    """

    certificate_file: Path
    private_key_file: Path
    trusted_dir: Path | None = None


@dataclass
class _Served:
    name: str
    machine: OpcuaMachine
    plc: MachinePlc
    nodes: dict[str, ua.NodeId] = field(default_factory=dict)
    observer: Callable[[Changes], Coroutine[Any, Any, None]] | None = None


class _PasswordUsers:
    """asyncua user manager: the users and passwords of the served machines' security."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(
        self, iserver: InternalServer, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if not self.users:
            return User(role=UserRole.User)
        if username is None or self.users.get(username) != password:
            return None  # asyncua answers BadUserAccessDenied
        return User(role=UserRole.User, name=username)


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(UInt32(code))


#: The status code of each kind of refused write.
_REFUSALS = {
    "access": _status(StatusCodes.BadNotWritable),
    "type": _status(StatusCodes.BadTypeMismatch),
    "range": _status(StatusCodes.BadOutOfRange),
}
_BAD_STATUS = _status(StatusCodes.BadWriteNotSupported)
_ADMIN = User(role=UserRole.Admin)


class _CheckedWrites(AttributeService):
    """asyncua's attribute service, with the PLC's check of every Value written to a tag node.

    asyncua has no per-node hook that can refuse a client's write with a status code (a value
    setter's answer is ignored, and it also sees the server's own updates): this service is
    what every session's Write goes through. Refused nodes get their status code and are not
    written; the rest go to asyncua's service (its access-level and type checks) as before.
    ``check`` answers ``None`` for a write it accepts (or a node that is not a tag).
    """

    def __init__(self, aspace: AddressSpace, check: Callable[[ua.WriteValue], ua.StatusCode | None]) -> None:
        super().__init__(aspace)
        self._check = check

    async def write(self, params: ua.WriteParameters, user: User = _ADMIN) -> list[ua.StatusCode]:
        refused = [self._check(wv) for wv in params.NodesToWrite]
        if all(r is None for r in refused):
            return await super().write(params, user)
        rest = [wv for wv, r in zip(params.NodesToWrite, refused, strict=True) if r is None]
        done = iter(await super().write(ua.WriteParameters(NodesToWrite=rest), user) if rest else [])
        return [r if r is not None else next(done) for r in refused]


def _node_name(node_id: str, tag: str) -> str:
    ident = node_id.split(";", 1)[-1][2:]
    return ident.rsplit(".", 1)[-1] if node_id.split(";")[-1].startswith("s=") else tag


class OpcuaTwinServer:
    """An asyncua server on one endpoint for one or more twin machines.

    ``start`` builds the address space (the first time: about 2 s, asyncua loads its standard
    nodes) and binds the endpoint (raises ``OSError`` if the port is taken). ``stop`` closes
    the endpoint and drops every client connection, as a PLC's comms module that restarts
    would; the address space keeps following the PLCs, and ``start`` again serves it as it is
    now, in milliseconds. ``close`` stops for good.
    """

    def __init__(
        self, endpoint: str, served: list[tuple[str, OpcuaMachine, MachinePlc]], security: ServerSecurity | None = None
    ) -> None:
        if not served:
            raise ValueError("an OPC-UA server needs at least one machine")
        self.endpoint = endpoint
        self.security = security
        self._served = [_Served(n, m, p) for n, m, p in served]
        self._node_tags: dict[ua.NodeId, tuple[_Served, str]] = {}
        self.server: Server | None = None
        self.listening = False
        #: Write requests that reached the server (for tests: "nothing was sent").
        self.writes_received = 0

    @property
    def machines(self) -> list[str]:
        return [s.name for s in self._served]

    async def start(self) -> None:
        """Start listening (building the address space the first time). Raises ``OSError``
        if the port is taken."""
        if self.listening:
            raise RuntimeError(f"the OPC-UA server at {self.endpoint} is already running")
        if self.server is None:
            self.server = await self._build_server()
        await self.server.start()
        self.listening = True

    async def _build_server(self) -> Server:
        first = self._served[0].machine
        sec = first.security
        for s in self._served[1:]:
            if s.machine.security != sec:
                raise ValueError(f"machines at {self.endpoint} must share one security setting")
        users: dict[str, str] = {}
        if sec.username is not None and sec.password_env is not None:
            pw = os.environ.get(sec.password_env)
            if pw is None:
                raise RuntimeError(
                    f"{self._served[0].name}: environment variable {sec.password_env} (the OPC-UA password) is not set"
                )
            users[sec.username] = pw
        server = Server(user_manager=_PasswordUsers(users))  # type: ignore[arg-type]
        await server.init()
        server.iserver.attribute_service = _CheckedWrites(server.iserver.aspace, self._check_write)
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"Atelier twin ({', '.join(self.machines)})")
        await server.set_application_uri(SERVER_URI)
        policy = _POLICIES[(sec.policy, sec.mode)]
        server.set_security_policy([policy])
        if users:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        if policy != ua.SecurityPolicyType.NoSecurity:
            if self.security is None:
                raise RuntimeError(f"{self.endpoint}: {sec.policy} {sec.mode} needs the server's certificate and key")
            await server.load_certificate(str(self.security.certificate_file))
            await server.load_private_key(str(self.security.private_key_file))
            if self.security.trusted_dir is not None:
                store = TrustStore([self.security.trusted_dir], [])
                await store.load()
                validator = CertificateValidator(
                    CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT, store
                )
                server.set_certificate_validator(validator)
        for s in self._served:
            await self._build(server, s)
        server.subscribe_server_callback(CallbackType.PostWrite, self._post_write)
        return server

    async def stop(self) -> None:
        """Stop listening and drop every connection; ``start`` serves again. Safe to call twice."""
        if self.listening and self.server is not None:
            self.listening = False
            await self.server.stop()

    async def close(self) -> None:
        """Stop for good: stop listening and stop following the PLCs."""
        await self.stop()
        for s in self._served:
            if s.observer is not None:
                s.plc.unobserve(s.observer)
                s.observer = None
        self.server = None

    async def __aenter__(self) -> OpcuaTwinServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ address space

    async def _build(self, server: Server, s: _Served) -> None:
        idx = await server.register_namespace(s.machine.namespace_uri)
        obj = await server.nodes.objects.add_object(
            ua.NodeId.from_string(f"ns={idx};s={s.name}"), ua.QualifiedName(s.name, idx)
        )
        await obj.write_attribute(
            AttributeIds.Description,
            ua.DataValue(ua.Variant(ua.LocalizedText(f"{s.machine.kind} {s.name}: {s.machine.description}".strip()))),
        )
        for tname, tag in s.machine.tags.items():
            nid = ua.NodeId.from_string(tag.node_id)
            raw = _raw(tag, s.plc.values[tname])
            var = await obj.add_variable(
                nid, ua.QualifiedName(_node_name(tag.node_id, tname), idx), raw, VARIANT_TYPES[tag.data_type]
            )
            if client_writable(tname, tag):
                await var.set_writable()
            if tag.unit or tag.description:
                text = f"{tag.description} [{tag.unit}]" if tag.unit else tag.description
                await var.write_attribute(
                    AttributeIds.Description, ua.DataValue(ua.Variant(ua.LocalizedText(text.strip())))
                )
            s.nodes[tname] = nid
            self._node_tags[nid] = (s, tname)
        for mname, cmd in METHODS.items():
            await obj.add_method(
                ua.NodeId.from_string(f"ns={idx};s={s.name}.{mname}"),
                ua.QualifiedName(mname, idx),
                self._method(s, cmd),
                [],
                [ua.VariantType.String],
            )

        async def publish(changes: Changes, s: _Served = s, server: Server = server) -> None:
            for tname, value in changes.items():
                nid = s.nodes.get(tname)
                if nid is None:
                    continue
                tag = s.machine.tags[tname]
                dv = ua.DataValue(ua.Variant(_raw(tag, value), VARIANT_TYPES[tag.data_type]))
                await server.write_attribute_value(nid, dv)

        s.observer = publish
        s.plc.observe(publish)

    def _method(self, s: _Served, cmd: Command) -> Callable[..., Coroutine[Any, Any, list[ua.Variant]]]:
        async def call(parent: Node) -> list[ua.Variant]:
            _status, message = await s.plc.execute_now(cmd)
            return [ua.Variant(message, ua.VariantType.String)]

        return call

    # ------------------------------------------------------------------ client writes

    def _check_write(self, wv: ua.WriteValue) -> ua.StatusCode | None:
        """The status code refusing one node of a client's Write, or ``None`` to let it through."""
        if wv.AttributeId != AttributeIds.Value:
            return None
        hit = self._node_tags.get(wv.NodeId)
        if hit is None:
            return None
        s, tname = hit
        tag = s.machine.tags[tname]
        dv = wv.Value
        status: ua.StatusCode | None = None
        if not client_writable(tname, tag):
            status, reason = _REFUSALS["access"], "is read-only"
        elif dv.StatusCode is not None and not dv.StatusCode.is_good():
            status, reason = _BAD_STATUS, f"a value with status {dv.StatusCode.name}"
        elif dv.Value is None or dv.Value.VariantType != VARIANT_TYPES[tag.data_type] or dv.Value.is_array:
            got = "nothing" if dv.Value is None else dv.Value.VariantType.name + (" array" if dv.Value.is_array else "")
            status, reason = _REFUSALS["type"], f"a {got}, not a {VARIANT_TYPES[tag.data_type].name}"
        else:
            try:
                check_client_write(s.name, tname, tag, dv.Value.Value)
            except WriteRefused as exc:
                status, reason = _REFUSALS[exc.kind], exc.reason
        if status is not None:
            log.info("%s: refused a write to %s (%s): %s", s.name, tname, status.name, reason)
        return status

    async def _post_write(self, event: ServerItemCallback, _dispatcher: Any) -> None:
        if not event.is_external:
            return
        self.writes_received += 1
        per_machine: dict[str, tuple[_Served, dict[str, TagValue]]] = {}
        for wv, result in zip(event.request_params.NodesToWrite, event.response_params, strict=False):
            if wv.AttributeId != AttributeIds.Value or not result.is_good():
                continue
            hit = self._node_tags.get(wv.NodeId)
            if hit is None:
                continue
            s, tname = hit
            try:
                value = from_raw(s.machine.tags[tname], wv.Value.Value.Value)
            except CodecError:
                log.warning("%s: ignoring a write of %r to %s", s.name, wv.Value.Value.Value, tname)
                continue
            per_machine.setdefault(s.name, (s, {}))[1][tname] = value
        for s, written in per_machine.values():
            await s.plc.on_write(written)


def _raw(tag: OpcuaTag, value: TagValue) -> RawValue:
    try:
        return to_raw(tag, value)
    except CodecError:
        return 0 if tag.data_type not in ("bool", "string") else (False if tag.data_type == "bool" else "")
