"""``atelier console``: serve the web console; ``atelier console add-user``: make an account.

Wiring only. The lead adds it to the ``atelier`` command with
``app.add_typer(console_app, name="console")`` (or calls :func:`register`).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from plant import PlantError, load_plant
from plant.text import safe_text

console_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    help="Serve the web console for supervisors, operators and plant engineers.",
)
out = Console()
err = Console(stderr=True)

DbOpt = Annotated[
    str,
    typer.Option("--db", envvar="ATELIER_DB", help="SQLAlchemy URL of the site database (users, plans, audit log)"),
]
DEFAULT_DB = "sqlite:///atelier.db"
PASSWORD_ENV = "ATELIER_CONSOLE_PASSWORD"
#: The password with which a person proves who they are to a command (else a hidden prompt).
IDENTITY_PASSWORD_ENV = "ATELIER_PASSWORD"
#: Where a command that names two people (``order``: the approving supervisor and the confirming
#: operator) finds each one's password first, before $ATELIER_PASSWORD.
SUPERVISOR_PASSWORD_ENV = "ATELIER_SUPERVISOR_PASSWORD"
OPERATOR_PASSWORD_ENV = "ATELIER_OPERATOR_PASSWORD"


def checked_person(db: str, name: str, action: str, password_env: str | None = None) -> str:
    """The name of ``name`` once their password is checked against the site's user store (the
    console's users, in ``db``) and their role may do ``action`` (an
    :class:`~llm_coordinator.console.auth.Action` value). The password comes from
    ``password_env`` when given and set, else $ATELIER_PASSWORD, else a hidden prompt. Exits
    with status 2 and says why otherwise: a name on a command line is a claim, not an identity."""
    from llm_coordinator.console.auth import Action, UserStore

    users = UserStore.from_url(db)
    if not users.users():
        err.print(
            f"no users in {safe_text(db, 200)}: add one with `atelier console add-user NAME --role ROLE`",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(2)
    envs = (password_env, IDENTITY_PASSWORD_ENV) if password_env else (IDENTITY_PASSWORD_ENV,)
    password = next((os.environ[e] for e in envs if os.environ.get(e)), None) or typer.prompt(
        f"password of {safe_text(name, 80)}", hide_input=True
    )
    user = users.verify(name, password)
    if user is None:
        _refused(db, name, "login_failed", "cli", f"{action}: unknown user or wrong password")
        err.print(safe_text(f"{name}: unknown user or wrong password"), markup=False, highlight=False)
        raise typer.Exit(2)
    if not user.may(Action(action)):
        _refused(db, user.name, "refused", action, f"cli: a {user.role} may not")
        err.print(safe_text(f"{name} is a {user.role}; {action} is not theirs to do"), markup=False, highlight=False)
        raise typer.Exit(2)
    return user.name


def _refused(db: str, actor: str, what: str, subject: str, detail: str) -> None:
    """A refused identity goes in the audit log as the console records its own (``login_failed``,
    ``refused``); a database that cannot take it does not change the refusal."""
    from llm_coordinator.store import Store

    try:
        store = Store(db)
        try:
            store.audit(safe_text(actor, 80), what, None, {"subject": subject, "detail": detail})
        finally:
            store.engine.dispose()
    except Exception as exc:
        err.print(safe_text(f"(recording the refusal failed: {exc})"), markup=False, highlight=False)


def forwarded_options(proxy: str | None) -> dict[str, object]:
    """uvicorn's options for ``--proxy``: forwarded headers (the client's address and scheme) are
    believed only from that address. uvicorn believes them from loopback by default, where the
    console listens: any client could then choose the address its login limits count."""
    return {"proxy_headers": True, "forwarded_allow_ips": proxy} if proxy else {"proxy_headers": False}


def tls_options(cert: Path | None, key: Path | None) -> dict[str, str]:
    """uvicorn's ``ssl_certfile``/``ssl_keyfile`` for ``--tls-cert``/``--tls-key`` (empty for
    plain HTTP). Raises ``ValueError`` with a sentence to show when only one of the two is
    given, a file cannot be read, or the key does not belong to the certificate (both PEM)."""
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key go together: the server's certificate and its private key (PEM)")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot serve TLS with certificate {cert} and key {key}: {exc}") from None
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@console_app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="address to listen on (loopback by default; another needs --tls-cert/--tls-key)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8765,
    db: DbOpt = DEFAULT_DB,
    state_dir: Annotated[
        Path,
        typer.Option(
            envvar="ATELIER_STATE_DIR",
            help="folder of the robots' e-stop latch files (the same as `atelier robot`) and rehearsal evidence",
        ),
    ] = Path("var/robots"),
    plant_file: Annotated[Path | None, typer.Option("--plant", "-p", help="plant description YAML")] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="coordinator configuration (JSON or YAML; backend, mode, budgets)")
    ] = None,
    session_hours: Annotated[float, typer.Option(min=0.05, max=24.0, help="a login lasts this long")] = 8.0,
    live: Annotated[
        bool | None,
        typer.Option(
            "--live/--twin",
            help="--live: the plant at the endpoints of the plant file (atelier twin serve, or a real plant: "
            "machines over OPC-UA/Modbus, each robot through its runtime over ROS 2); --twin: the console's "
            "own in-process twin, where nothing real moves. One of the two is required.",
        ),
    ] = None,
    twin_speed: Annotated[float, typer.Option(min=0.1, max=10.0, help="--twin: twin time per wall-clock time")] = 1.0,
    robots: Annotated[
        list[str] | None,
        typer.Option(
            "--robot",
            "-r",
            help="--live: a robot whose runtime must answer (repeatable; default every robot of the plant)",
        ),
    ] = None,
    domain_id: Annotated[
        int | None, typer.Option("--domain-id", help="--live: ROS 2 domain id (default: ROS_DOMAIN_ID or 0)")
    ] = None,
    poll_s: Annotated[
        float, typer.Option("--poll", min=0.02, max=5.0, help="--live: read each machine's status this often (s)")
    ] = 0.1,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="serve HTTPS with this certificate (PEM; with --tls-key)")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="the certificate's private key (PEM)")] = None,
    proxy: Annotated[
        str | None,
        typer.Option(
            "--proxy",
            help="the address of a reverse proxy in front of the console, whose X-Forwarded-For and "
            "X-Forwarded-Proto are believed (default: none; a client's own headers never choose "
            "the address its login limits count)",
        ),
    ] = None,
) -> None:
    """Serve the console on http://HOST:PORT over the coordinator and a plant, with the same
    database, model, guardrails, rehearsal and executor as `atelier order`: --live drives the
    plant of the plant file with the agents of `atelier order --live`; --twin drives the console's
    own twin (blocks until Ctrl-C). With --tls-cert and --tls-key it serves https:// and the
    session cookie is Secure; without them, listening on an address other than loopback is only
    warned about (passwords and session cookies would cross the network in clear)."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        tls = tls_options(tls_cert, tls_key)
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {escape(safe_text(exc, 2000))}", highlight=False)
        raise typer.Exit(2) from None
    if not tls and not is_loopback(host):
        err.print(
            f"[yellow]warning:[/] serving plain HTTP on {escape(safe_text(host, 100))}: passwords and session "
            "cookies cross the network in clear; give --tls-cert and --tls-key (or put a TLS proxy in front)",
            highlight=False,
        )
    if live is None:
        err.print(
            "say which plant the console drives: [bold]--live[/] (the plant at the plant file's endpoints: "
            "`atelier twin serve` or a real one) or [bold]--twin[/] (its own twin; nothing real moves)"
        )
        raise typer.Exit(2)
    import uvicorn
    import yaml
    from pydantic import ValidationError

    from llm_coordinator.cli_plan import _config
    from llm_coordinator.console.wiring import ConsoleSite, LiveConsoleSite, build_live_site, build_site
    from plant.interface import ConnectError
    from plant.trust import TrustError

    try:
        plant = load_plant(plant_file)
        config = _config(config_file, db, None)
    except PlantError as exc:
        err.print(f"[bold red]error:[/] {escape(safe_text(exc, 20000, newlines=True))}", highlight=False)
        raise typer.Exit(2) from None
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        shown = escape(safe_text(f"configuration {config_file}: {exc}", 20000, newlines=True))
        err.print(f"[bold red]error:[/] {shown}", highlight=False)
        raise typer.Exit(2) from None
    ttl_s = session_hours * 3600.0
    site: ConsoleSite | LiveConsoleSite
    if live:
        # The robot agents sign goals with the keys of $ATELIER_STATE_DIR/trust (as `atelier order
        # --live`): this process's state folder is --state-dir.
        os.environ["ATELIER_STATE_DIR"] = str(state_dir)
        try:
            site = build_live_site(
                plant,
                db,
                state_dir,
                config=config,
                robots=robots,
                domain_id=domain_id,
                poll_s=poll_s,
                session_ttl_s=ttl_s,
                secure_cookies=bool(tls),
            )
        except ValueError as exc:
            err.print(f"[bold red]error:[/] {escape(safe_text(exc, 2000))}", highlight=False)
            raise typer.Exit(2) from None
    else:
        site = build_site(
            plant,
            db,
            state_dir,
            config=config,
            twin_speed=twin_speed,
            session_ttl_s=ttl_s,
            secure_cookies=bool(tls),
        )
    if not site.app.state.users.users():
        err.print("[yellow]no users yet:[/] add one with [bold]atelier console add-user NAME --role ROLE[/]")
    try:
        site.start()
    except (ConnectError, TimeoutError, TrustError) as exc:
        err.print(f"[bold red]cannot reach the plant:[/] {escape(safe_text(exc, 2000))}", highlight=False)
        err.print(
            "(is `atelier twin serve` running, and `atelier robot runtime NAME` for each robot? --robot limits them)"
        )
        site.stop()
        raise typer.Exit(2) from None
    name = escape(safe_text(plant.name, 80))
    mode = "the live plant" if live else "its own twin"
    scheme = "https" if tls else "http"
    out.print(
        f"console of [bold]{name}[/] over {mode} on {scheme}://{escape(safe_text(host, 100))}:{port}/ (API: /api/docs)"
    )
    try:
        uvicorn.run(site.app, host=host, port=port, log_level="warning", **tls, **forwarded_options(proxy))  # type: ignore[arg-type]
    finally:
        site.stop()


@console_app.command("add-user")
def add_user(
    name: Annotated[str, typer.Argument(help="user name (lower case, 2 to 32 characters)")],
    role: Annotated[str, typer.Option(help="engineer, supervisor or operator")],
    db: DbOpt = DEFAULT_DB,
    replace: Annotated[bool, typer.Option(help="change the role and password of an existing user")] = False,
) -> None:
    """Create a console user. The password comes from $ATELIER_CONSOLE_PASSWORD or a prompt."""
    from sqlalchemy.engine import make_url

    from llm_coordinator.console.auth import AuthError, UserStore, make_engine

    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        user = UserStore(make_engine(db)).add_user(name, role, password, replace=replace)
    except AuthError as exc:
        err.print(f"[bold red]error:[/] {escape(safe_text(exc))}", highlight=False)
        raise typer.Exit(2) from None
    shown = escape(safe_text(user.name, 80))
    where = escape(safe_text(make_url(db).render_as_string(hide_password=True), 300))
    out.print(f"user [bold]{shown}[/] ({user.role.value}) saved in {where}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``console`` to the ``atelier`` command."""
    app.add_typer(console_app, name="console")
