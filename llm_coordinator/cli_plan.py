"""The ``atelier`` commands of the work-order loop; :func:`register` adds them to the app.

``plan``, ``plans``, ``show``, ``approve``, ``confirm``, ``reject``, ``run`` and
``audit verify``. This module is wiring: it builds backends through :mod:`llm_coordinator.wiring`.

``plan``, ``show``, ``order`` and ``replan`` take ``--json``: one JSON document of the plan on
stdout (:mod:`llm_coordinator.plan_json`, documented in ``docs/plan-json.md``), every other line on
stderr. ``plan --reading FILE`` submits a work order a person wrote in the plan language
(:mod:`llm_coordinator.reading`), without a model.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llm_coordinator.cli_console import OPERATOR_PASSWORD_ENV, SUPERVISOR_PASSWORD_ENV, checked_person
from llm_coordinator.config import CoordinatorConfig, ModelConfig
from plant.interface import ConnectError
from plant.text import safe_text
from plant.trust import TrustError

#: Why a plan cannot start on the live plant: a machine unreachable, a robot's runtime not
#: listening, a robot's key missing. Each is said in one line, nothing moves.
_UNREACHABLE = (ConnectError, TimeoutError, TrustError)

if TYPE_CHECKING:
    from llm_coordinator.approval import ApprovalGate
    from llm_coordinator.coordinator import Coordinator
    from llm_coordinator.executor import ExecutionReport
    from llm_coordinator.reading import Reading

out = Console()
err = Console(stderr=True)

DbOpt = Annotated[str, typer.Option("--db", help="SQLAlchemy URL of the plan store")]
PlantOpt = Annotated[Path | None, typer.Option("--plant", "-p", help="plant description YAML (default: demo cell)")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="coordinator configuration (JSON or YAML; backend, mode, budgets)")
]

EvidenceOpt = Annotated[Path, typer.Option(help="directory for Gantt charts and frames")]
ModeOpt = Annotated[str | None, typer.Option(help="intent (small models) or direct")]
FramesOpt = Annotated[bool, typer.Option("--frames/--no-frames", help="take frames of the rehearsal as evidence")]
RehearsalsOpt = Annotated[
    int | None,
    typer.Option(
        min=1, max=1000, help="rehearse a plan that passes N-1 more times from perturbed starts, for its risk figures"
    ),
]
WorkersOpt = Annotated[int | None, typer.Option(min=1, max=256, help="processes the perturbed rehearsals run on")]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="run the perturbed rehearsals on the Ray cluster at ADDRESS (host:port), or 'local'",
    ),
]
SeedOpt = Annotated[int | None, typer.Option(help="seed of the first perturbed start")]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="print the plan as one JSON document on stdout (see docs/plan-json.md); other text goes to stderr",
    ),
]

#: The model of a work order written in the plan language: there is none, and a call would fail.
_NO_MODEL = {"backend": "scripted", "replies": [{"error": "no model reads an order written in the plan language"}]}


def _config(
    path: Path | None, db: str, mode: str | None, *, no_model: bool = False, many: Mapping[str, object] | None = None
) -> CoordinatorConfig:
    """The configuration file ``path`` with the command's options over it (``many``: the
    perturbed rehearsals' settings that were given)."""
    data: dict[str, object] = {}
    if path is not None:
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        model = data.get("model")
        backend = model.get("backend") if isinstance(model, dict) else None
        if isinstance(backend, dict) and isinstance(backend.get("adapter"), str):
            # A tuned model's directory is named relative to the configuration file.
            backend["adapter"] = str((path.parent / backend["adapter"]).resolve())
    data["database_url"] = db
    if mode is not None:
        data["mode"] = mode
    data.setdefault("model", ModelConfig().model_dump())
    if no_model:
        # Nothing is asked of a model; none is loaded (and none need be installed).
        model = data["model"] if isinstance(data["model"], dict) else {}
        data["model"] = {**model, "backend": _NO_MODEL}
    data.update({k: v for k, v in (many or {}).items() if v is not None})
    return CoordinatorConfig.model_validate(data)


def _model_name(co: Coordinator) -> str | None:
    """The backend (and model) that reads work orders for ``co``, as it names itself."""
    name = getattr(co.planner.backend, "name", None)
    return str(name) if name else None


@dataclass
class _JsonOut:
    """What a ``--json`` command prints when it ends: the document ``make`` builds (None: nothing,
    the command failed before there was a plan to show)."""

    enabled: bool
    make: Callable[[], dict[str, Any]] | None = None


@contextmanager
def _json_output(enabled: bool) -> Iterator[_JsonOut]:
    """With ``enabled``, everything the command writes to stdout while it runs (rich tables,
    prompts, and what C libraries print) goes to stderr, and when it ends (normally or with an
    exit code) the one JSON document it asked for is written to stdout. Without, nothing changes."""
    from llm_coordinator.plan_json import dumps

    doc = _JsonOut(enabled)
    if not enabled:
        yield doc
        return
    real = sys.stdout
    real.flush()
    fd: int | None
    to: int | None
    try:
        fd, to = real.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        fd = to = None  # not a file (a test runner's buffer): replacing sys.stdout is enough
    saved = os.dup(fd) if fd is not None else None
    if fd is not None and to is not None:
        os.dup2(to, fd)
    sys.stdout = sys.stderr
    ended = False
    try:
        yield doc
        ended = True
    except (typer.Exit, click.exceptions.Exit, SystemExit):
        ended = True
        raise
    finally:
        sys.stdout.flush()
        sys.stdout = real
        if saved is not None and fd is not None:
            os.dup2(saved, fd)
            os.close(saved)
        if ended and doc.make is not None:
            real.write(dumps(doc.make()) + "\n")
            real.flush()


def _safe(value: object, limit: int = 500) -> str:
    """Text from outside (a model, a machine, a person, the store) for a line with rich markup:
    control characters escaped, at most ``limit`` characters, markup escaped."""
    return escape(safe_text(value, limit))


def _report(answer: Mapping[str, Any], note: str = "", *, doc: _JsonOut | None = None) -> NoReturn:
    """Where a submitted work order ended up (``answer``: :func:`llm_coordinator.serve.answer_of`,
    made here or by ``atelier serve``); exit 0 when it awaits approval. With ``doc`` enabled, as
    the plan's JSON document instead."""
    code = 0 if answer["status"] == "awaiting_approval" else 1
    if doc is not None and doc.enabled:
        document = dict(answer["document"])
        doc.make = lambda: document
        raise typer.Exit(code)
    out.print(f"plan [bold]{_safe(answer['plan_id'])}[/]{note}: {_safe(answer['status'])}")
    if answer.get("model"):
        out.print(f"  read by {_safe(answer['model'], 200)}", highlight=False)
    for r in answer.get("reasons") or []:
        out.print(f"  - {_safe(r)}", highlight=False)
    for line in answer.get("risk") or []:
        out.print(f"  risk: {_safe(line)}", highlight=False)
    for e in answer.get("evidence") or []:
        out.print(f"  evidence: {_safe(e)}", highlight=False)
    raise typer.Exit(code)


#: The options of ``atelier plan`` that belong to the server with ``--server``.
_SERVER_OWNS = {
    "mode": "--mode",
    "db": "--db",
    "plant_file": "--plant",
    "config": "--config",
    "evidence": "--evidence",
    "frames": "--frames/--no-frames",
    "rehearsals": "--rehearsals",
    "workers": "--workers",
    "ray": "--ray",
    "seed": "--seed",
}


def _ask(server: Path, words: str, reading: Reading | None) -> dict[str, Any]:
    """The answer of ``atelier serve`` at ``server`` for a work order; a failure is printed and
    exits with code 1 (2 when the request itself was refused)."""
    from pydantic import ValidationError

    from llm_coordinator.serve import Request, ServeError, ask

    try:
        request = Request(order=words, reading=reading.model_dump(mode="json") if reading is not None else None)
    except ValidationError as exc:
        why = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:4])
        err.print(f"[bold red]error:[/] not a work order the server takes: {_safe(why)}", highlight=False)
        raise typer.Exit(2) from None
    try:
        answer = ask(server, request)
    except ServeError as exc:
        err.print(f"[bold red]error:[/] {_safe(exc)}", highlight=False)
        raise typer.Exit(1) from None
    if not answer["ok"]:
        err.print(f"[bold red]error:[/] {_safe(answer.get('error'), 2000)}", highlight=False)
        raise typer.Exit(2)
    return answer


# --------------------------------------------------------------------------- a reading from a file

#: Where a value sits in a reading file: its path (keys and list indices) -> (line, column), 1-based.
_Where = dict[tuple[str | int, ...], tuple[int, int]]
#: A reading file larger than this is not one a person wrote.
_MAX_READING_BYTES = 1_000_000


class ReadingFileError(ValueError):
    """A reading file that is not a reading: each problem as ``FILE:LINE:COL: field: reason``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _positions(node: Any, path: tuple[str | int, ...], where: _Where, name: str) -> None:
    """Record where every value of a composed YAML (or JSON) document starts; a key given twice
    is an error (the second would silently win)."""
    import yaml

    from plant.loader import format_path

    where[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key in seen:
                raise ReadingFileError([f"{name}:{line}:{col}: {format_path((*path, key))}: the key is given twice"])
            seen.add(key)
            where[(*path, "<key>", key)] = (line, col)
            _positions(value_node, (*path, key), where, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _positions(item, (*path, i), where, name)


def _field_path(loc: tuple[str | int, ...], data: Any) -> tuple[str | int, ...]:
    """A pydantic error location as a path in the file: the labels pydantic adds for the
    members of a union (a goal's kind, a value's type) are dropped."""
    path: list[str | int] = []
    cursor = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(cursor, dict):
            if part in cursor:
                path.append(part)
                cursor = cursor[part]
            elif last:
                path.append(part)  # a missing field
                cursor = None
            # else: the label of a union member (``task``, ``int``): not in the file
        elif isinstance(cursor, list) and isinstance(part, int) and 0 <= part < len(cursor):
            path.append(part)
            cursor = cursor[part]
        elif not isinstance(cursor, dict | list):
            break  # below a plain value there are only union labels
    return tuple(path)


def _reason(err: Mapping[str, Any]) -> str:
    kind, msg = err["type"], str(err["msg"])
    if kind == "extra_forbidden":
        return "unknown field (not part of the plan language; check its spelling)"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        return f"kind {safe_text(ctx.get('tag'), 40)!r} is not one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return 'the goal needs a "kind" (recipe, task, if or repeat)'
    if kind.startswith("literal_") or kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{msg} (got {safe_text(json.dumps(err.get('input'), default=str), 60)})"
    return msg


def load_reading(text: str, name: str) -> Reading:
    """A :class:`~llm_coordinator.reading.Reading` from the text of a JSON or YAML file named
    ``name``. :class:`ReadingFileError` names the place (line, column, field) and the reason of
    every problem found."""
    import yaml
    from pydantic import ValidationError

    from llm_coordinator.reading import Reading
    from plant.loader import format_path

    data: Any
    node: Any = None
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReadingFileError([f"{name}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"]) from None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)  # for the places of the problems
        except yaml.YAMLError:
            node = None
    else:
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            raise ReadingFileError([f"{name}:{line}:{col}: not valid YAML: {exc.problem or exc}"]) from None
        except yaml.YAMLError as exc:
            raise ReadingFileError([f"{name}:1:1: not valid YAML: {exc}"]) from None
    where: _Where = {}
    if node is not None:
        _positions(node, (), where, name)
    if not isinstance(data, dict):
        what = "empty" if data is None else f"a {type(data).__name__}"
        raise ReadingFileError(
            [f"{name}:1:1: (top level): a reading is a mapping (outcome, goals, ...), this file is {what}"]
        )
    try:
        return Reading.model_validate(data)
    except ValidationError as exc:
        reasons: dict[tuple[str | int, ...], list[str]] = {}
        for e in exc.errors():
            reasons.setdefault(_field_path(tuple(e["loc"]), data), []).append(_reason(e))
        problems = []
        for path, why in list(reasons.items())[:8]:
            at = where.get((*path[:-1], "<key>", path[-1])) if path else None
            if at is None:
                at = next((where[path[:n]] for n in range(len(path), -1, -1) if path[:n] in where), (1, 1))
            unique = list(dict.fromkeys(why))
            problems.append(f"{name}:{at[0]}:{at[1]}: {format_path(path) or '(top level)'}: {' or '.join(unique)}")
        raise ReadingFileError(problems) from None


def _read_reading(source: str) -> Reading:
    """The reading in file ``source`` (``-``: stdin); a problem is printed and exits with code 2."""
    name = "<stdin>" if source == "-" else source
    try:
        if source == "-":
            text = sys.stdin.read(_MAX_READING_BYTES + 1)
        else:
            with open(source, encoding="utf-8") as f:
                text = f.read(_MAX_READING_BYTES + 1)
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"[bold red]error:[/] cannot read the reading {_safe(name)}: {_safe(exc)}", highlight=False)
        raise typer.Exit(2) from None
    try:
        if len(text) > _MAX_READING_BYTES:
            raise ReadingFileError([f"{name}:1:1: (top level): larger than {_MAX_READING_BYTES} characters"])
        return load_reading(text, name)
    except ReadingFileError as exc:
        err.print("[bold red]error:[/] not a reading in the plan language:", highlight=False)
        for p in exc.problems:
            err.print(f"  {_safe(p, 1000)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@contextmanager
def _store_refusal() -> Iterator[None]:
    """What the store refuses (an unknown plan, a status that does not allow the change) is
    printed, and the command exits with code 2."""
    from llm_coordinator.store import StoreError

    try:
        yield
    except StoreError as exc:
        err.print(_safe(exc), highlight=False)
        raise typer.Exit(2) from None


def _print_run(report: ExecutionReport) -> int:
    """The steps of a run and how it ended; returns the exit code (0 when the plan is done)."""
    for rec in report.records:
        took = f"{rec.end_s - rec.start_s:6.1f} s"
        line = f"  {_safe(rec.step, 40):20s} {_safe(rec.agent, 40):12s} {rec.status:7s} {took}  {_safe(rec.detail)}"
        out.print(line, highlight=False)
    why = f" ({_safe(report.reason)})" if report.reason else ""
    out.print(f"plan {report.plan_id}: {report.status} in {report.makespan_s:.1f} s{why}", highlight=False)
    if report.recovery_plan_id is not None:
        out.print(f"recovery plan {report.recovery_plan_id} drafted (see `atelier show {report.recovery_plan_id}`)")
    return 0 if report.status == "done" else 1


def _execute(co: Coordinator, cfg: CoordinatorConfig, plan_id: int, *, live: bool, unreachable: str) -> int:
    """Run (or resume) approved plan ``plan_id`` on the live plant (its machines at their
    endpoints, the runtimes of the robots the plan uses over ROS 2), else on a fresh in-process
    twin. The exit status: the run's (:func:`_print_run`), 2 when the approval does not hold,
    3 when the plant is unreachable (``unreachable`` says what became of the plan)."""
    from llm_coordinator.approval import NotApproved
    from llm_coordinator.wiring import build_executor, live_agents, twin_factory

    plant: Any = co.plant

    @asynccontextmanager
    async def agents() -> AsyncIterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
        if live:
            stored = co.store.plan(plan_id)  # only the robots this plan uses need their runtimes
            used = sorted({s.agent for s in stored.steps if s.agent in plant.robots}) if stored else []
            async with live_agents(plant, robots=used) as (machines, robots):
                yield machines, robots
        else:
            async with twin_factory(render=False)(plant) as session:
                yield session.machines, session.robots

    async def go() -> int:
        try:
            async with agents() as (machines, robots):
                out.print("executing on " + ("the live plant" if live else "an in-process twin"))
                ex = build_executor(co, machines, robots, cfg)
                try:
                    report = await ex.run(plan_id, actor="cli")
                except NotApproved as exc:
                    for r in exc.reasons:
                        err.print(f"  - {_safe(r)}", highlight=False)
                    return 2
        except _UNREACHABLE as exc:
            err.print(f"plan {plan_id} {unreachable}: {_safe(str(exc))}", highlight=False)
            return 3
        return _print_run(report)

    return asyncio.run(go())


def _plant(path: Path | None) -> object:
    from plant import PlantError, load_plant

    try:
        return load_plant(path)
    except PlantError as exc:
        err.print(f"[bold red]error:[/] {escape(safe_text(exc, 20000, newlines=True))}", highlight=False)
        raise typer.Exit(2) from None


def _gate(db: str, plant_file: Path | None) -> ApprovalGate:
    from llm_coordinator.approval import ApprovalGate
    from llm_coordinator.store import Store

    return ApprovalGate(Store(db), _plant(plant_file))  # type: ignore[arg-type]


async def _read_live_plant(plant: Any) -> Any:
    """One reading of every machine of the live plant (robots are not asked)."""
    from llm_coordinator.snapshot import read_snapshot
    from llm_coordinator.wiring import live_agents

    async with live_agents(plant, robots=[]) as (machines, _):
        return await read_snapshot(machines)


def register(app: typer.Typer) -> None:
    """Add the work-order commands to ``app`` (the ``atelier`` command)."""
    audit_app = typer.Typer(no_args_is_help=True, help="The audit log.")
    app.add_typer(audit_app, name="audit")

    @app.command("plan")
    def plan_cmd(
        ctx: typer.Context,
        order: Annotated[
            str | None, typer.Argument(help="the work order, in plain words (with --reading: its words, optional)")
        ] = None,
        reading_file: Annotated[
            str | None,
            typer.Option(
                "--reading",
                metavar="FILE",
                help="the work order written in the plan language (JSON or YAML of a reading; - for stdin): "
                "no model reads it",
            ),
        ] = None,
        order_words: Annotated[
            str | None, typer.Option("--order", metavar="TEXT", help="the work order's words (kept with the plan)")
        ] = None,
        mode: ModeOpt = None,
        db: DbOpt = "sqlite:///atelier.db",
        plant_file: PlantOpt = None,
        config: ConfigOpt = None,
        evidence: EvidenceOpt = Path("atelier_evidence"),
        frames: FramesOpt = True,
        rehearsals: RehearsalsOpt = None,
        workers: WorkersOpt = None,
        ray: RayOpt = None,
        seed: SeedOpt = None,
        server: Annotated[
            Path | None,
            typer.Option(
                "--server",
                metavar="SOCKET",
                help="ask the warm coordinator of `atelier serve --socket SOCKET` (its plant, store, model and "
                "rehearsals) instead of starting one here",
            ),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Plan a work order: model, guardrails, rehearsal in the twin; ends awaiting approval.
        With --reading, the order is written in the plan language and no model reads it. With
        --rehearsals N, a plan that passes is rehearsed again from N-1 perturbed starts (on
        --workers processes, or on Ray with --ray) and the risk figures are kept with it. With
        --server, a running `atelier serve` plans it (no start-up here)."""
        if order is not None and order_words is not None:
            err.print("give the work order's words once: as the argument or with --order", highlight=False)
            raise typer.Exit(2)
        words = order_words if order_words is not None else order
        if reading_file is None and not words:
            err.print("no work order: give its words, or --reading FILE", highlight=False)
            raise typer.Exit(2)
        if server is not None:
            given = [
                flag
                for name, flag in _SERVER_OWNS.items()
                if getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")
            ]
            if given:
                err.print(
                    f"{', '.join(given)}: with --server these are the server's (give them to `atelier serve`)",
                    highlight=False,
                )
                raise typer.Exit(2)
        # A malformed reading is refused before anything is stored.
        reading = _read_reading(reading_file) if reading_file is not None else None
        with _json_output(as_json) as doc:
            if server is not None:
                _report(_ask(server, words or "", reading), doc=doc)
            from llm_coordinator.serve import answer_of
            from llm_coordinator.wiring import build_coordinator

            many = {"rehearsals": rehearsals, "rehearsal_workers": workers, "ray_address": ray, "rehearsal_seed": seed}
            cfg = _config(config, db, mode, no_model=reading is not None, many=many)
            co = build_coordinator(_plant(plant_file), cfg, evidence_dir=evidence, render=frames)  # type: ignore[arg-type]
            if reading is not None:
                sub = asyncio.run(co.submit_reading(reading, work_order=words or "", actor="cli"))
                _report(answer_of(co, sub, None), doc=doc)
            sub = asyncio.run(co.submit(words or "", actor="cli"))
            _report(answer_of(co, sub, _model_name(co)), doc=doc)

    @app.command("serve")
    def serve_cmd(
        socket_path: Annotated[
            Path, typer.Option("--socket", help="the Unix socket to answer on (made readable by this user only)")
        ] = Path("atelier.sock"),
        mode: ModeOpt = None,
        db: DbOpt = "sqlite:///atelier.db",
        plant_file: PlantOpt = None,
        config: ConfigOpt = None,
        evidence: EvidenceOpt = Path("atelier_evidence"),
        frames: FramesOpt = True,
        rehearsals: RehearsalsOpt = None,
        workers: WorkersOpt = None,
        ray: RayOpt = None,
        seed: SeedOpt = None,
    ) -> None:
        """Keep a coordinator warm (the model loaded, the twin compiled) and plan the work orders
        of `atelier plan --server SOCKET` as they come, one at a time, until Ctrl-C. Only this
        user can open the socket; nothing listens on a network."""
        from llm_coordinator.serve import ServeError, check_socket_path, serve
        from llm_coordinator.wiring import build_coordinator

        try:
            check_socket_path(socket_path)  # (before anything is built or stored)
        except ServeError as exc:
            err.print(f"[bold red]error:[/] {_safe(exc)}", highlight=False)
            raise typer.Exit(2) from None
        many = {"rehearsals": rehearsals, "rehearsal_workers": workers, "ray_address": ray, "rehearsal_seed": seed}
        cfg = _config(config, db, mode, many=many)
        # (the evidence's paths go to clients in other folders: absolute)
        co = build_coordinator(_plant(plant_file), cfg, evidence_dir=evidence.resolve(), render=frames)  # type: ignore[arg-type]
        model = _model_name(co) or "no model"
        err.print(
            f"{_safe(model, 200)} and the twin of {_safe(co.plant.name)} (store {_safe(co.store.where, 300)}, "
            f"evidence in {_safe(evidence.resolve(), 300)})",
            highlight=False,
        )
        try:
            asyncio.run(serve(co, socket_path, say=lambda line: err.print(_safe(line, 1000), highlight=False)))
        except ServeError as exc:
            err.print(f"[bold red]error:[/] {_safe(exc)}", highlight=False)
            raise typer.Exit(2) from None

    @app.command("replan")
    def replan_cmd(
        plan_id: int,
        db: DbOpt = "sqlite:///atelier.db",
        plant_file: PlantOpt = None,
        config: ConfigOpt = None,
        evidence: EvidenceOpt = Path("atelier_evidence"),
        as_json: JsonOpt = False,
    ) -> None:
        """Draft a turned-down plan's work order again as a new plan, telling the model why the
        last one was turned down (the supervisor's reason, the rules', the rehearsal's)."""
        from llm_coordinator.serve import answer_of
        from llm_coordinator.wiring import build_coordinator

        with _json_output(as_json) as doc:
            plant = _plant(plant_file)
            co = build_coordinator(plant, _config(config, db, None), evidence_dir=evidence)  # type: ignore[arg-type]
            with _store_refusal():
                feedback = co.replan_feedback(plan_id)
            for f in feedback:
                out.print(f"  feedback: {_safe(f)}", highlight=False)
            sub = asyncio.run(co.replan(plan_id, actor="cli"))
            _report(answer_of(co, sub, _model_name(co)), f" (again for plan {plan_id})", doc=doc)

    @app.command("order")
    def order_cmd(
        order: Annotated[str, typer.Argument(help="the work order, in plain words")],
        yes: Annotated[
            bool,
            typer.Option("--yes", help="approve without asking, as the supervisor named with --as (approval only)"),
        ] = False,
        approve_as: Annotated[
            str | None,
            typer.Option(
                "--as",
                help="the line supervisor who approves (checked against the site's users before planning; "
                "password from $ATELIER_SUPERVISOR_PASSWORD, $ATELIER_PASSWORD or a prompt)",
            ),
        ] = None,
        confirm_as: Annotated[
            str | None,
            typer.Option(
                "--confirm-as",
                help="the robot operator who confirms the hazardous steps (checked against the site's users; "
                "password from $ATELIER_OPERATOR_PASSWORD, $ATELIER_PASSWORD or a prompt)",
            ),
        ] = None,
        mode: Annotated[str | None, typer.Option(help="intent (small models) or direct")] = None,
        db: DbOpt = "sqlite:///atelier.db",
        plant_file: PlantOpt = None,
        config: ConfigOpt = None,
        evidence: EvidenceOpt = Path("atelier_evidence"),
        live: Annotated[
            bool,
            typer.Option(
                "--live",
                help="execute on the live plant (machines over OPC-UA/Modbus, robots over ROS 2: "
                "`atelier twin serve` and the robot runtimes must be running) instead of an in-process twin",
            ),
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """The whole loop: plan, guardrails, rehearsal, an approval prompt (or --yes), execution
        (on the live plant with --live, else on an in-process twin), summary. The plan is
        approved by a line supervisor of the site's users (--as, else asked at the prompt),
        never by whoever runs the command."""
        from llm_coordinator.wiring import build_coordinator

        with _json_output(as_json) as doc:
            plant = _plant(plant_file)
            cfg = _config(config, db, mode)
            if yes and approve_as is None:
                err.print("--yes approves as a line supervisor: name them with --as NAME", highlight=False)
                raise typer.Exit(2)
            # Who approves is checked before anything is planned: a wrong name or password costs nothing.
            supervisor = (
                checked_person(cfg.database_url, approve_as, "approve_plan", SUPERVISOR_PASSWORD_ENV)
                if approve_as is not None
                else None
            )
            co = build_coordinator(plant, cfg, evidence_dir=evidence)  # type: ignore[arg-type]
            snapshot = None
            if live:
                # The live plant as it is (states, doors, faults, machines in alarm) for the
                # planner's context and the guardrails, as the console reads it.
                try:
                    snapshot = asyncio.run(_read_live_plant(plant))
                except _UNREACHABLE as exc:
                    err.print(f"cannot read the live plant: {_safe(str(exc))}", highlight=False)
                    raise typer.Exit(3) from None
            sub = asyncio.run(co.submit(order, snapshot=snapshot, actor="cli"))
            if doc.enabled:
                from llm_coordinator.plan_json import plan_document

                # Whatever becomes of the plan below, the document says where it ended.
                doc.make = lambda: plan_document(co.store, sub.plan_id, submission=sub, model=_model_name(co))
            out.print(f"plan [bold]{sub.plan_id}[/]: {sub.status}")
            for r in sub.reasons:
                out.print(f"  - {_safe(r)}", highlight=False)
            if sub.status != "awaiting_approval":
                raise typer.Exit(1)
            plan = co.store.plan(sub.plan_id)
            if plan is None:  # pragma: no cover - a plan awaiting approval always has a version
                raise typer.Exit(2)
            for s in plan.steps:
                flag = "  [hazardous]" if s.hazardous else ""
                line = f"  {s.id:18s} {s.agent:11s} {s.skill:11s} {json.dumps(s.args)}"
                out.print(safe_text(line, 300) + flag, highlight=False, markup=False)
            if sub.rehearsal is not None:
                out.print(f"rehearsed in the twin: makespan {sub.rehearsal.makespan_s:.1f} s")
            for e in sub.evidence or []:
                out.print(f"  evidence: {_safe(e)}", highlight=False)
            if not yes and not typer.confirm(f"approve plan {sub.plan_id}?", default=False):
                out.print(
                    f"plan {sub.plan_id} not approved; it waits (`atelier approve`, `atelier reject`, the console)"
                )
                raise typer.Exit(1)
            if supervisor is None:
                name = typer.prompt("line supervisor who approves")
                supervisor = checked_person(cfg.database_url, name, "approve_plan", SUPERVISOR_PASSWORD_ENV)
            # Bound to the version shown above.
            how = "--yes" if yes else "at the prompt"
            co.gate.approve(sub.plan_id, supervisor, how, content_hash=plan.content_hash())
            hazardous = co.gate.required_confirmations(plan)
            if hazardous:
                # A hazardous step is confirmed by a robot operator, never by a flag.
                operator = confirm_as
                if operator is None and not yes:
                    operator = typer.prompt("robot operator who confirms the hazardous steps (empty: none)", default="")
                if not operator:
                    out.print(
                        f"plan {sub.plan_id} approved; its hazardous steps wait for an operator: "
                        + ", ".join(safe_text(s, 80) for s in hazardous)
                        + f" (`atelier confirm {sub.plan_id} STEP --as NAME`, or the console)",
                        highlight=False,
                        markup=False,
                    )
                    raise typer.Exit(4)
                operator = checked_person(cfg.database_url, operator, "confirm_step", OPERATOR_PASSWORD_ENV)
                for step, why in hazardous.items():
                    prompt = f"{operator}: confirm hazardous step {safe_text(step, 80)} ({safe_text(why, 200)})?"
                    if confirm_as is None and not typer.confirm(prompt, default=False):
                        raise typer.Exit(4)
                    co.gate.confirm(sub.plan_id, step, operator)

            raise typer.Exit(_execute(co, cfg, sub.plan_id, live=live, unreachable="approved, not run"))

    @app.command("plans")
    def plans_cmd(db: DbOpt = "sqlite:///atelier.db") -> None:
        """List plans, newest first."""
        from llm_coordinator.store import Store

        t = Table()
        for c in ("id", "status", "mode", "work order"):
            t.add_column(c)
        for row in Store(db).plans():
            t.add_row(str(row.id), row.status, row.mode, _safe(row.work_order, 70))
        out.print(t)

    @app.command("show")
    def show_cmd(plan_id: int, db: DbOpt = "sqlite:///atelier.db", as_json: JsonOpt = False) -> None:
        """Show a plan: status, steps, guardrail failures, rehearsal, Gantt and evidence files."""
        from llm_coordinator.store import Store

        store = Store(db)
        with _store_refusal():
            row = store.get(plan_id)
        if as_json:
            from llm_coordinator.plan_json import dumps, plan_document

            with _store_refusal():
                document = plan_document(store, plan_id)
            sys.stdout.write(dumps(document) + "\n")
            return
        out.print(f"plan {row.id} [bold]{row.status}[/] ({row.mode}): {_safe(row.work_order)}", highlight=False)
        for r in row.reasons:
            out.print(f"  reason: {_safe(r)}", highlight=False)
        plan = store.plan(plan_id)
        if plan is not None:
            t = Table(title=f"hash {plan.content_hash()[:16]}")
            for c in ("step", "agent", "skill", "args", "after", "s", "hazard"):
                t.add_column(c)
            for s in plan.steps:
                t.add_row(
                    _safe(s.id, 40),
                    _safe(s.agent, 40),
                    _safe(s.skill, 40),
                    _safe(json.dumps(s.args), 200),
                    _safe(",".join(s.after), 200),
                    f"{s.expected_duration_s:g}",
                    "yes" if s.hazardous else "",
                )
            out.print(t)
        rh = store.rehearsal(plan_id)
        if rh is not None:
            out.print(f"rehearsal: {'ok' if rh.ok else 'FAILED'}, makespan {rh.makespan_s:.1f} s")
            risk = rh.report.get("risk") if isinstance(rh.report, dict) else None
            if isinstance(risk, dict):
                from llm_coordinator.rehearsal import risk_lines

                for line in risk_lines(risk):
                    out.print(f"  risk: {_safe(line)}", highlight=False)
            for e in rh.evidence:
                out.print(f"  evidence: {_safe(e)}", highlight=False)

    @app.command("approve")
    def approve_cmd(
        plan_id: int,
        supervisor: Annotated[str, typer.Option("--as", help="the supervisor's name")],
        reason: str = "",
        db: DbOpt = "sqlite:///atelier.db",
        plant_file: PlantOpt = None,
    ) -> None:
        """A supervisor approves the plan's current version (bound to its hash); their password
        from $ATELIER_PASSWORD or a prompt, checked against the site's users."""
        supervisor = checked_person(db, supervisor, "approve_plan")
        with _store_refusal():
            h = _gate(db, plant_file).approve(plan_id, supervisor, reason)
        out.print(f"plan {plan_id} approved (hash {h[:16]})")

    @app.command("confirm")
    def confirm_cmd(
        plan_id: int,
        step: str,
        operator: Annotated[str, typer.Option("--as", help="the robot operator's name")],
        db: DbOpt = "sqlite:///atelier.db",
        plant_file: PlantOpt = None,
    ) -> None:
        """A robot operator confirms one hazardous step (their password from $ATELIER_PASSWORD or a
        prompt, checked against the site's users)."""
        operator = checked_person(db, operator, "confirm_step")
        with _store_refusal():
            _gate(db, plant_file).confirm(plan_id, step, operator)
        out.print(f"step {_safe(step, 80)} of plan {plan_id} confirmed by {_safe(operator, 80)}", highlight=False)

    @app.command("reject")
    def reject_cmd(
        plan_id: int,
        reason: Annotated[str, typer.Option(help="why (kept as feedback for the next plans)")],
        supervisor: Annotated[str, typer.Option("--as", help="the supervisor's name")],
        db: DbOpt = "sqlite:///atelier.db",
        plant_file: PlantOpt = None,
    ) -> None:
        """A supervisor rejects the plan, with a reason (their password checked as for approve)."""
        supervisor = checked_person(db, supervisor, "reject_plan")
        with _store_refusal():
            _gate(db, plant_file).reject(plan_id, supervisor, reason)
        out.print(f"plan {plan_id} rejected")

    @app.command("run")
    def run_cmd(
        plan_id: int,
        in_process: Annotated[
            bool, typer.Option("--in-process", help="run on a fresh in-process twin instead of the live plant")
        ] = False,
        db: DbOpt = "sqlite:///atelier.db",
        plant_file: PlantOpt = None,
        config: ConfigOpt = None,
        evidence: EvidenceOpt = Path("atelier_evidence"),
    ) -> None:
        """Run (or resume) an approved plan on the plant: machines over OPC-UA/Modbus at the
        endpoints of the plant description, robots over ROS 2 (their runtimes must be running),
        or with --in-process on a fresh in-process twin. Refused unless approved for the plan's
        exact hash with every hazardous step confirmed."""
        from llm_coordinator.wiring import build_coordinator

        plant = _plant(plant_file)
        cfg = _config(config, db, None)
        # Recovery plans drafted on a failure are checked and rehearsed (without frames).
        co = build_coordinator(plant, cfg, evidence_dir=evidence, render=False)  # type: ignore[arg-type]

        raise typer.Exit(_execute(co, cfg, plan_id, live=not in_process, unreachable="not run"))

    @audit_app.command("verify")
    def audit_verify(
        db: DbOpt = "sqlite:///atelier.db",
        trust_dir: Annotated[
            Path | None,
            typer.Option(
                help="folder of the audit key and the anchored head (default: $ATELIER_STATE_DIR/trust, "
                "else <database file>.trust)"
            ),
        ] = None,
    ) -> None:
        """Check the audit log: its chain, every row's tag under the audit key, and the head
        anchored outside the database; print the head; exit 1 if a row was edited, deleted,
        re-chained or written without the key, or the tail was cut."""
        from llm_coordinator.store import Store

        with _store_refusal():
            report = Store(db, trust_dir=trust_dir).verify_audit()
        h = report.head
        head = f"head: row {h.seq}, hash {h.hash[:16]}, anchored in {h.where}" if h else "head: none anchored"
        out.print(safe_text(head), highlight=False, markup=False)
        for n in report.notes:
            out.print(safe_text(f"note: {n}"), highlight=False, markup=False)
        if report.ok:
            out.print(f"audit log ok: {report.rows} rows, chain intact, tags match the audit key", highlight=False)
            return
        for problem in report.problems:
            err.print(safe_text(problem), highlight=False, markup=False)
        raise typer.Exit(1)


def main() -> None:
    """``python -m llm_coordinator.cli_plan``: these commands without the rest of ``atelier``."""
    app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
    register(app)
    app()


if __name__ == "__main__":
    main()
