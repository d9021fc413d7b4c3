"""The console's web application: pages for people, a JSON API for programs, one live feed.

:func:`create_app` builds a FastAPI app over a :class:`~.services.ConsoleBackend` (plans,
approvals, operator confirmations, e-stop, work orders, audit log) and a
:class:`~.auth.UserStore` (logins). Pages are rendered on the server (Jinja2) with a little
script for the live plant view and the operator's e-stop table (server-sent events) and
work-order progress; the JSON API under ``/api`` is described by the OpenAPI document at
``/api/openapi.json``.

Every request that changes something checks the person's role (:data:`~.auth.PERMISSIONS`),
and every action and every refusal is written to the audit log with the person's name. Failed
logins are limited per address and per (user name, address) (:class:`~.auth.LoginLimit`), so
nobody without the password can lock a person out: the form says so, the API answers 429, and
the audit log gets an address's first failure and lock-out, then one summary per window. Form
input is checked by :mod:`.forms`; a mistake comes back as a message on the page, never as a
stack trace.

Cross-site requests: every request that changes something and is authenticated by the session
cookie must carry the session's CSRF token (:func:`~.auth.csrf_token`; the pages put it in a
hidden ``csrf_token`` field, a script sends it as ``X-CSRF-Token``), else it is refused with 403,
whatever its ``Origin`` says (a missing or ``null`` Origin is no excuse, a matching one is not
enough). A request with a Bearer token needs none: a browser never adds that header across
sites. Logins (no session yet) are refused when their Origin is another site's.

The e-stop is never refused to anyone logged in. A trip latches whatever else is wrong with the
request: the reason is cleaned up and shortened, unknown fields are ignored, the robot's name is
matched without regard to case, a garbled body trips every robot; only a name that is no robot
of the plant is answered with 404 listing the robots. A trip without a valid CSRF token (from a
stale page, or from another site) still latches, because a forged trip is at worst a stop, and
is audited as ``estop_trip_unverified`` beside the ``estop_trip``. Resetting stays with the
robot operators, with "area clear", and needs the token like any other change.

Every response carries a Content-Security-Policy without inline scripts (the pages' scripts are
in ``/static``), ``frame-ancestors 'none'``, ``X-Frame-Options``, ``X-Content-Type-Options`` and
``Referrer-Policy``; over HTTPS, HSTS and Secure cookies. A numeric id too large for the database
is a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from llm_coordinator.status import PLAN_STATUSES, REPLANNABLE, TERMINAL
from plant.text import safe_text

from .auth import (
    Action,
    AuthError,
    LoginFailed,
    LoginLimit,
    LoginLocked,
    Role,
    User,
    UserStore,
    client_key,
    csrf_matches,
    csrf_token,
)
from .drawing import gantt_svg, schedule, top_view_svg
from .forms import MAX_REASON_CHARS, FormError, check_work_order, clean_text
from .services import (
    JOB_STATES,
    ActionRefused,
    AuditView,
    ConfirmationView,
    ConsoleBackend,
    JobView,
    LiveView,
    PlanDetail,
    PlanSummary,
    PlantView,
    View,
    format_args,
    now_s,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
COOKIE = "atelier_session"
#: Where a request that changes something carries the session's CSRF token.
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: How often the live stream of plans and alarms looks at the store and the plant feed (s).
LIVE_POLL_S = 0.5
#: A comment line this often keeps proxies from closing a quiet live stream (s).
LIVE_KEEPALIVE_S = 15.0
#: POST here makes a session (no token exists yet): only a foreign Origin is refused.
_LOGIN_PATHS = frozenset({"/login", "/api/session"})
#: Stopping is never refused to anyone logged in, token or not (see the module's docstring).
_TRIP_PATHS = frozenset({"/estop/trip", "/api/estop/trip"})
#: The largest id the database can hold; a larger number in a path is a 404, not a 500.
_MAX_ID = 2**63 - 1
#: Scripts only from the console itself (no inline script anywhere); the plan legend's colour
#: swatches are the only inline style attributes.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
#: FastAPI's Swagger page loads its script and style from a CDN and starts with an inline script.
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

#: What each action is called in a sentence ("a operator may not ...").
ACTION_WORDS: dict[Action, str] = {
    Action.VIEW: "view the console",
    Action.SUBMIT_WORK_ORDER: "submit work orders (engineers and supervisors do)",
    Action.APPROVE_PLAN: "approve plans (supervisors do)",
    Action.REJECT_PLAN: "reject plans (supervisors do)",
    Action.CONFIRM_STEP: "confirm hazardous steps (robot operators do)",
    Action.REFUSE_STEP: "refuse hazardous steps (robot operators do)",
    Action.TRIP_ESTOP: "trip an e-stop",
    Action.RESET_ESTOP: "reset an e-stop (only a robot operator may)",
    Action.OVERRULE_INSPECTION: "overrule an inspection verdict (only a robot operator or a supervisor may)",
}


# --------------------------------------------------------------------------- API bodies


class LoginBody(View):
    """Credentials for ``POST /api/session``."""

    name: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class SessionView(View):
    """A logged-in person and when the session ends."""

    name: str
    role: Role
    expires_in_s: float
    token: str | None = Field(default=None, description="bearer token (also set as an HttpOnly cookie)")
    csrf_token: str | None = Field(
        default=None,
        description="when authenticating by the cookie, send this as the X-CSRF-Token header with every "
        "request that changes something (not needed with the Bearer token)",
    )


class ReasonBody(View):
    """A decision's reason (required to reject or refuse, optional to approve or confirm)."""

    reason: str = Field(default="", max_length=MAX_REASON_CHARS)


class OverruleBody(View):
    """An overrule of a vision verdict: the right label and why."""

    label: str = Field(max_length=64, description="good, or a defect of the part's type")
    reason: str = Field(max_length=MAX_REASON_CHARS)


class TripBody(BaseModel):
    """Trip the e-stop of one robot, or of all robots when ``robot`` is None or "all".

    Documentation only: a trip is never refused for its body. Unknown fields are ignored, a
    long or garbled reason is cleaned up and shortened, the robot's name is matched without
    regard to case, and a body that is no JSON object trips every robot."""

    model_config = ConfigDict(extra="ignore")

    robot: str | None = None
    reason: str = Field(default="", description=f"kept up to {MAX_REASON_CHARS} characters")


class ApproveBody(ReasonBody):
    """An approval: ``plan_hash`` is the plan version the supervisor read (``PlanDetail.plan_hash``);
    if the plan changed since, the approval is refused (409)."""

    plan_hash: str | None = Field(default=None, max_length=64)


class ResetBody(View):
    """Reset one robot's e-stop: the operator states the robot's area is clear."""

    robot: str
    area_clear: bool = Field(description="the operator has checked that nobody is in the robot's area")
    note: str = Field(default="", max_length=MAX_REASON_CHARS)


class WorkOrderBody(View):
    """A work order in words, or a recipe with parameters (blank parameters take defaults)."""

    text: str = Field(default="", max_length=4000)
    recipe: str | None = None
    params: dict[str, int | float | str] = Field(default_factory=dict)


class Problem(View):
    """Why a request was refused."""

    detail: str | list[str]


# --------------------------------------------------------------------------- page refusals


class _PageRefusal(Exception):
    """Raised by page dependencies: redirect to the login page, or show a refusal page."""

    def __init__(self, status: int, message: str, login: bool = False) -> None:
        self.status, self.message, self.login = status, message, login


def _safe_next(target: str | None, default: str = "/plant") -> str:
    """A local path to go back to (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def _script_json(model: BaseModel | None) -> Markup:
    """``model`` as JSON to put inside a ``<script>`` (``null`` for None): ``<``, ``>`` and ``&``
    are written as JSON escapes, so text in it (an e-stop reason) cannot end the script."""
    text = "null" if model is None else model.model_dump_json()
    return Markup(text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"))


def _state_class(state: str) -> str:
    return "st-" + "".join(c if c.isalnum() else "-" for c in state.lower())


def _problem(exc: FormError | ActionRefused) -> tuple[int, list[str]]:
    """The HTTP status and the sentences a page shows for input to correct or a refused action."""
    return (422, exc.messages) if isinstance(exc, FormError) else (exc.status, [exc.message])


def _out_of_range(text: str) -> bool:
    """True for a number no row of the database can have as its id (it would overflow)."""
    try:
        return abs(int(text)) > _MAX_ID
    except ValueError:
        return False


def _same_origin(request: Request, origin: str) -> bool:
    """True when ``origin`` (an Origin header) names this server as the request reached it
    (its host and port: behind a proxy that ends TLS the scheme seen here may differ)."""
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _done(path: str, notice: str) -> RedirectResponse:
    """After a form's action: see ``path`` with a one-line notice of what was done."""
    return RedirectResponse(f"{path}{'&' if '?' in path else '?'}notice={quote(notice)}", 303)


# --------------------------------------------------------------------------- who is asking


def token_of(request: Request) -> str:
    """The session token of a request: a Bearer header, else the session cookie."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.cookies.get(COOKIE, "")


async def user_of(request: Request) -> User | None:
    """The logged-in person of a request, or None."""
    token = token_of(request)
    if not token:
        return None
    users: UserStore = request.app.state.users
    return await run_in_threadpool(users.session_user, token)


async def _refuse(user: User, action: Action, request: Request) -> str:
    message = f"A {user.role.value} may not {ACTION_WORDS[action]}."
    backend: ConsoleBackend = request.app.state.backend
    await backend.audit(user.name, "refused", action.value, f"{request.method} {request.url.path}: {message}")
    return message


def _user(action: Action, *, page: bool) -> Callable[[Request], Awaitable[User]]:
    """The logged-in user who may take ``action``; else 401 or 403 (as a page, or as the API's)."""

    async def dep(request: Request) -> User:
        user = await user_of(request)
        if user is None:
            if page:
                raise _PageRefusal(401, "Please log in.", login=True)
            raise HTTPException(401, "Log in first (POST /api/session).", headers={"WWW-Authenticate": "Bearer"})
        if not user.may(action):
            message = await _refuse(user, action, request)
            raise _PageRefusal(403, message) if page else HTTPException(403, message)
        return user

    return dep


# One name per (surface, action), so that a route's signature says who may call it.
ApiView = Annotated[User, Depends(_user(Action.VIEW, page=False))]
ApiSubmit = Annotated[User, Depends(_user(Action.SUBMIT_WORK_ORDER, page=False))]
ApiApprove = Annotated[User, Depends(_user(Action.APPROVE_PLAN, page=False))]
ApiReject = Annotated[User, Depends(_user(Action.REJECT_PLAN, page=False))]
ApiConfirm = Annotated[User, Depends(_user(Action.CONFIRM_STEP, page=False))]
ApiRefuse = Annotated[User, Depends(_user(Action.REFUSE_STEP, page=False))]
ApiTrip = Annotated[User, Depends(_user(Action.TRIP_ESTOP, page=False))]
ApiReset = Annotated[User, Depends(_user(Action.RESET_ESTOP, page=False))]
ApiOverrule = Annotated[User, Depends(_user(Action.OVERRULE_INSPECTION, page=False))]
PageView = Annotated[User, Depends(_user(Action.VIEW, page=True))]
PageSubmit = Annotated[User, Depends(_user(Action.SUBMIT_WORK_ORDER, page=True))]
PageApprove = Annotated[User, Depends(_user(Action.APPROVE_PLAN, page=True))]
PageReject = Annotated[User, Depends(_user(Action.REJECT_PLAN, page=True))]
PageConfirm = Annotated[User, Depends(_user(Action.CONFIRM_STEP, page=True))]
PageRefuse = Annotated[User, Depends(_user(Action.REFUSE_STEP, page=True))]
PageTrip = Annotated[User, Depends(_user(Action.TRIP_ESTOP, page=True))]
PageReset = Annotated[User, Depends(_user(Action.RESET_ESTOP, page=True))]
PageOverrule = Annotated[User, Depends(_user(Action.OVERRULE_INSPECTION, page=True))]


def create_app(
    backend: ConsoleBackend,
    users: UserStore,
    *,
    secure_cookies: bool = False,
    stream_interval_s: float = 0.05,
    title: str = "Atelier console",
    login_limit: LoginLimit | None = None,
) -> FastAPI:
    """The console app over ``backend`` and ``users``.

    ``secure_cookies`` marks the session cookie Secure (it is anyway on a request that came over
    HTTPS).
    ``stream_interval_s`` is the shortest time between two live-feed messages to one browser.
    ``login_limit``, when given, replaces the failed-login limit of ``users`` (see
    :class:`~.auth.LoginLimit`: per address and per (name, address), growing delays); it holds
    for the login form and ``POST /api/session`` together.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The first work order should not wait for the model's load and the twin's compile.
        warming = asyncio.create_task(backend.warm_up())
        try:
            yield
        finally:
            warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warming

    app = FastAPI(
        lifespan=lifespan,
        title=title,
        version="1",
        description="Atelier's console: plant state, plans and approvals, operator confirmations, e-stop, "
        "work orders. Log in with POST /api/session; send the token as a Bearer header or the cookie.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.backend = backend
    app.state.users = users
    if login_limit is not None:
        users.set_login_limit(login_limit)
    plant = backend.plant
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        plant=plant,
        format_args=format_args,
        state_class=_state_class,
        Action=Action,
        REPLANNABLE=REPLANNABLE,
        title=title,
        csrf_token="",
        # Where the plant is (the console's own twin, or a live plant): every page says it.
        plant_mode=backend.feed.mode,
        plant_source=backend.feed.source,
    )
    env.filters["script_json"] = _script_json
    env.filters["secs"] = lambda v: "–" if v is None else f"{float(v):.1f} s"
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    top_svg = top_view_svg(plant)

    def render(request: Request, template: str, user: User | None, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        notice = request.query_params.get("notice", "")
        html = env.get_template(template).render(
            user=user,
            # After a POST the page shown is not at its URL; the e-stop form then returns to /operator.
            request_path=request.url.path if request.method == "GET" else "/operator",
            notice=notice[:300],
            # The forms' hidden csrf_token (pages are shown to the session of the cookie).
            csrf_token=csrf_token(session) if (session := request.cookies.get(COOKIE, "")) else "",
            **{"errors": [], **ctx},
        )
        return HTMLResponse(html, status_code=status_code)

    # ------------------------------------------------------------------ errors as pages or JSON

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    @app.exception_handler(_PageRefusal)
    async def _on_page_refusal(request: Request, exc: _PageRefusal) -> Response:
        if exc.login:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        user = await user_of(request)
        return render(request, "error.html", user, status_code=exc.status, heading="Not allowed", errors=[exc.message])

    @app.exception_handler(StarletteHTTPException)  # also 404s of unknown routes, 405s
    async def _on_http(request: Request, exc: StarletteHTTPException) -> Response:
        if wants_json(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        user = await user_of(request)
        heading = {404: "Not found", 405: "Not allowed here", 400: "Bad request"}.get(exc.status_code, "Refused")
        return render(request, "error.html", user, exc.status_code, heading=heading, errors=[str(exc.detail)])

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> Response:
        messages = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            messages.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
        return await problem(request, 422, "Please check the input", messages, messages)

    @app.exception_handler(FormError)
    async def _on_form_error(request: Request, exc: FormError) -> Response:
        return await problem(request, 422, "Please check the input", exc.messages, exc.messages)

    @app.exception_handler(ActionRefused)
    async def _on_refused(request: Request, exc: ActionRefused) -> Response:
        return await problem(request, exc.status, "Not done", [exc.message], exc.message)

    async def problem(request: Request, status: int, heading: str, messages: list[str], detail: object) -> Response:
        """``detail`` as JSON for the API, else an error page with ``heading`` and ``messages``."""
        if wants_json(request):
            return JSONResponse({"detail": detail}, status_code=status)
        return render(request, "error.html", await user_of(request), status, heading=heading, errors=messages)

    @app.exception_handler(Exception)
    async def _on_crash(request: Request, exc: Exception) -> Response:
        log.exception("console request %s %s failed", request.method, request.url.path)
        message = "Something went wrong on the server. It has been logged; please try again or tell the engineer."
        if wants_json(request):
            return JSONResponse({"detail": message}, status_code=500)
        return HTMLResponse(
            env.get_template("error.html").render(
                user=None, request_path="", notice="", heading="Server error", errors=[message]
            ),
            status_code=500,
        )

    async def csrf_problem(request: Request) -> str | None:
        """Why a request that changes something does not show it was sent by the console's own
        page or an API client of the session (None when it does)."""
        if request.headers.get("authorization", "")[:7].lower() == "bearer ":
            return None  # the session is the Bearer token's, a header no cross-site page can add
        session = request.cookies.get(COOKIE, "")
        if not session:
            return None  # no session to ride on: the route asks for a login
        origin = request.headers.get("origin")
        if origin and origin != "null" and not _same_origin(request, origin):
            return f"it was sent from another site ({safe_text(origin, 100)})"
        sent = request.headers.get(CSRF_HEADER, "")
        content_type = request.headers.get("content-type", "")
        if not sent and content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            try:
                await request.body()  # cached: the route reads the same form again
                value = (await request.form()).get(CSRF_FIELD)
            except Exception:  # a garbled form carries no token
                value = None
            sent = value if isinstance(value, str) else ""
        if not sent:
            return "it carries no security token (it was not sent from a page of this console)"
        if not csrf_matches(session, sent):
            return "its security token is not this session's (a page from before the last login?)"
        return None

    csrf_audited: dict[str, float] = {}

    async def refuse_cross_site(request: Request, why: str) -> Response:
        user = await user_of(request)
        who = user.name if user is not None else "?"
        log.warning("refused %s %s of %s: %s", request.method, request.url.path, who, why)
        # One audit row per person and minute: a hostile page cannot flood the log through a browser.
        if time.monotonic() - csrf_audited.get(who, -1e9) > 60.0:
            csrf_audited[who] = time.monotonic()
            origin = safe_text(request.headers.get("origin", "(none)"), 100)
            await backend.audit(
                who, "csrf_refused", request.url.path[:200], f"{request.method}: {why}; Origin {origin}"
            )
        message = (
            f"Refused: {why}. Nothing was done. If you sent it from the console, reload the page and try again. "
            f"(API clients: send the session's csrf_token as the {CSRF_HEADER} header, or use the Bearer token.)"
        )
        return await problem(request, 403, "Refused", [message], message)

    @app.middleware("http")
    async def _guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        response: Response | None = None
        if request.method not in _SAFE_METHODS:
            if request.method == "POST" and path in _LOGIN_PATHS:
                origin = request.headers.get("origin")
                if origin is not None and not _same_origin(request, origin):
                    response = await refuse_cross_site(request, f"a login from another site ({safe_text(origin, 100)})")
            elif path in _TRIP_PATHS:
                request.state.csrf_problem = await csrf_problem(request)  # noted; never a reason to refuse
            elif (why := await csrf_problem(request)) is not None:
                response = await refuse_cross_site(request, why)
        if response is None and any(_out_of_range(part) for part in path.split("/")):
            message = "There is no such item: the number in the address is out of range."
            response = await problem(request, 404, "Not found", [message], message)
        if response is None:
            response = await call_next(request)
        headers = response.headers
        headers.setdefault("Content-Security-Policy", _DOCS_CSP if path == "/api/docs" else CSP)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "same-origin")
        if request.url.scheme == "https":
            headers.setdefault("Strict-Transport-Security", "max-age=15552000")
        if headers.get("content-type", "").startswith("text/html"):
            headers.setdefault("Cache-Control", "no-store")
        return response

    def set_cookie(request: Request, response: Response, token: str) -> None:
        secure = secure_cookies or request.url.scheme == "https"
        response.set_cookie(
            COOKIE, token, max_age=int(users.ttl_s), httponly=True, samesite="strict", secure=secure, path="/"
        )

    def robot_field(form_value: object) -> str:
        if not isinstance(form_value, str) or not form_value.strip():
            raise FormError(["Robot: please choose a robot."])
        name = form_value.strip()
        if name not in plant.robots:
            known = ", ".join(sorted(plant.robots))
            raise FormError([f"Robot: {name!r} is not a robot of this plant; one of: {known}."])
        return name

    def trip_target(raw: object) -> str | None:
        """The robot a trip names: None (every robot) for nothing, "all" or blank; else the
        plant's robot of that name, matched without regard to case, surrounding space or
        invisible characters. Raise :class:`ActionRefused` (404, naming the robots) for a name
        that is no robot of the plant: which robot was meant cannot be guessed."""
        if raw is None:
            return None
        text = raw if isinstance(raw, str) else str(raw)
        key = "".join(c for c in text if c.isprintable()).strip().casefold()
        if key in ("", "all"):
            return None
        for name in plant.robots:
            if name.casefold() == key:
                return name
        known = ", ".join(sorted(plant.robots))
        raise ActionRefused(
            f"There is no robot {safe_text(text, 80)!r}; the robots of this plant are: {known}. Nothing was "
            "tripped: name one of them, or send no robot (or 'all') to trip every robot.",
            404,
        )

    async def trip(request: Request, user: User, raw_robot: object, raw_reason: object) -> str | None:
        """Latch the e-stop of the robot ``raw_robot`` names (every robot for none): nothing about
        the request but an unknown robot stops it. The reason is cleaned up and shortened, never
        checked; a trip without the session's CSRF token is audited as unverified after it
        latched. Returns the robot tripped (None: all)."""
        try:
            robot = trip_target(raw_robot)
        except ActionRefused as exc:
            detail = f"{request.method} {request.url.path}: {exc.message}"
            await backend.audit(user.name, "refused", Action.TRIP_ESTOP.value, detail)
            raise
        text = raw_reason.strip() if isinstance(raw_reason, str) else "" if raw_reason is None else str(raw_reason)
        reason = safe_text(text, MAX_REASON_CHARS) if text else "e-stop pressed in the console"
        await backend.trip_estop(robot, user.name, reason)
        why = getattr(request.state, "csrf_problem", None)
        if why:
            origin = safe_text(request.headers.get("origin", "(none)"), 100)
            await backend.audit(
                user.name,
                "estop_trip_unverified",
                f"robot {robot or 'all'}",
                f"{request.method} {request.url.path}: latched although {why}; Origin {origin}. "
                "Stopping is never refused; check with the person before the reset.",
            )
        return robot

    async def write_login_reports() -> None:
        """Write the summaries of failed-login windows that have closed."""
        for report in users.throttle.due_reports():
            await backend.audit(report.actor, "login_failures", "console", safe_text(report.detail, 2000))

    async def log_in(request: Request, name: str, password: str, via: str) -> tuple[User, str]:
        """Log in through ``users`` (which limits failures per address and per name from an
        address). Audit an address's first failure and first lock-out of a window; the rest go
        into one summary row when the window closes. Raise :class:`AuthError`
        (:class:`LoginLocked` when held back)."""
        address = client_key(request.client.host if request.client is not None else None)
        actor = safe_text(name, 40) or "?"
        await write_login_reports()
        limit = users.throttle.limit
        rest = f"further failures from {address} within {limit.window_s:.0f} s go into one login_failures record"
        try:
            user, token = await run_in_threadpool(users.login, name, password, address)
        except LoginLocked as exc:
            if exc.audit:
                await backend.audit(actor, "login_failed", "console", f"{via} from {address}: {exc}; {rest}")
            if exc.audit_lockout:
                held = "this address" if exc.scope == "address" else "this user name from this address"
                await backend.audit(
                    actor,
                    "login_locked_out",
                    "console",
                    f"{via} from {address}: {exc.failures} failed logins of this name within {limit.window_s:.0f} s; "
                    f"{held} is held back for {exc.retry_after_s:.0f} s, longer at each further failure; {rest}",
                )
            raise
        except LoginFailed as exc:
            if exc.audit:
                await backend.audit(
                    actor,
                    "login_failed",
                    "console",
                    f"{via} from {address}: {exc} (failure {exc.failures} of {limit.max_failures} for this name "
                    f"from this address); {rest}",
                )
            raise
        except AuthError as exc:
            await backend.audit(actor, "login_failed", "console", f"{via} from {address}: {exc}")
            raise
        detail = f"role {user.role.value}" + (", API" if via == "API" else "")
        await backend.audit(user.name, "login", "console", detail)
        return user, token

    # ================================================================== JSON API

    @app.post(
        "/api/session",
        response_model=SessionView,
        tags=["session"],
        responses={401: {"model": Problem}, 429: {"model": Problem, "description": "too many failed logins"}},
    )
    async def api_login(request: Request, body: LoginBody, response: Response) -> SessionView:
        """Log in; the token comes back in the body and as an HttpOnly cookie, with the
        session's CSRF token (send it as ``X-CSRF-Token`` when authenticating by the cookie).

        After too many failed logins from an address (or of a user name from it), that address
        (or name from it) is refused for a while with 429 and a ``Retry-After`` header, whether
        or not such a user exists; other addresses are not affected."""
        try:
            user, token = await log_in(request, body.name, body.password, "API")
        except LoginLocked as exc:
            retry = {"Retry-After": str(math.ceil(exc.retry_after_s))}
            raise HTTPException(429, str(exc), headers=retry) from None
        except AuthError as exc:
            raise HTTPException(401, str(exc)) from None
        set_cookie(request, response, token)
        return SessionView(
            name=user.name, role=user.role, expires_in_s=users.ttl_s, token=token, csrf_token=csrf_token(token)
        )

    @app.delete("/api/session", status_code=204, tags=["session"])
    async def api_logout(request: Request, user: ApiView) -> Response:
        """End the session of the token or cookie sent."""
        await run_in_threadpool(users.logout, token_of(request))
        await backend.audit(user.name, "logout", "console", "API")
        response = Response(status_code=204)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/api/me", response_model=SessionView, tags=["session"])
    async def api_me(request: Request, user: ApiView) -> SessionView:
        """Who is logged in, and the session's CSRF token."""
        token = token_of(request)
        return SessionView(name=user.name, role=user.role, expires_in_s=users.ttl_s, csrf_token=csrf_token(token))

    @app.get("/api/plant", response_model=PlantView, tags=["plant"], responses={503: {"model": Problem}})
    async def api_plant(user: ApiView) -> PlantView:
        """The newest snapshot of every machine, robot, person and part."""
        snap = backend.feed.latest
        if snap is None:
            raise HTTPException(503, "No plant state yet: is the twin or the plant connected?")
        return snap

    @app.get(
        "/api/plant/stream",
        tags=["plant"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "`event: plant` with a PlantView"}},
    )
    async def api_plant_stream(request: Request, user: ApiView) -> StreamingResponse:
        """Server-sent events: a ``plant`` event with a :class:`PlantView` at every change
        (at most one per ``stream_interval_s``); a ``logout`` event when the session ends."""
        token = token_of(request)

        async def events() -> AsyncIterator[str]:
            yield "retry: 1000\n\n"
            checked = now_s()
            async for snap in backend.feed.subscribe(min_interval_s=stream_interval_s):
                yield f"id: {snap.seq}\nevent: plant\ndata: {snap.model_dump_json()}\n\n"
                if now_s() - checked > 10.0:
                    checked = now_s()
                    if await run_in_threadpool(users.session_user, token) is None:
                        yield "event: logout\ndata: {}\n\n"
                        return

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    @app.get("/api/live", response_model=LiveView, tags=["plans"])
    async def api_live(user: ApiView, plan: str | None = None) -> LiveView:
        """Plans running or paused, the steps of ``plan`` (an id) when given, and the alarms."""
        return await backend.live(plan)

    @app.get(
        "/api/live/stream",
        tags=["plans"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "`event: live` with a LiveView"}},
    )
    async def api_live_stream(request: Request, user: ApiView, plan: str | None = None) -> StreamingResponse:
        """Server-sent events: a ``live`` event with a :class:`LiveView` (``plan``'s steps when
        given) at once and at every change; a ``logout`` event when the session ends."""
        token = token_of(request)

        async def events() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            last, sent, checked, seq = "", now_s(), now_s(), 0
            while not await request.is_disconnected():
                body = (await backend.live(plan)).model_dump_json()
                if body != last:
                    last, sent, seq = body, now_s(), seq + 1
                    yield f"id: {seq}\nevent: live\ndata: {body}\n\n"
                elif now_s() - sent > LIVE_KEEPALIVE_S:
                    sent = now_s()
                    yield ": keep-alive\n\n"
                if now_s() - checked > 10.0:
                    checked = now_s()
                    if await run_in_threadpool(users.session_user, token) is None:
                        yield "event: logout\ndata: {}\n\n"
                        return
                await asyncio.sleep(LIVE_POLL_S)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    @app.get("/api/plans", response_model=list[PlanSummary], tags=["plans"])
    async def api_plans(user: ApiView) -> list[PlanSummary]:
        """Every plan, newest first."""
        return await backend.list_plans()

    @app.get("/api/plans/{plan_id}", response_model=PlanDetail, tags=["plans"], responses={404: {"model": Problem}})
    async def api_plan(plan_id: str, user: ApiView) -> PlanDetail:
        """A plan with steps, guardrail results, rehearsal evidence and audit trail."""
        plan = await backend.get_plan(plan_id)
        if plan is None:
            raise HTTPException(404, f"No plan {plan_id!r}.")
        return plan

    @app.post("/api/plans/{plan_id}/approve", status_code=204, tags=["plans"], responses={409: {"model": Problem}})
    async def api_approve(plan_id: str, body: ApproveBody, user: ApiApprove) -> Response:
        """Approve a plan awaiting approval (supervisors), bound to ``plan_hash`` when given."""
        reason = clean_text(body.reason, "Reason", required=False)
        await backend.approve(plan_id, user.name, reason or "approved", body.plan_hash)
        return Response(status_code=204)

    @app.post("/api/plans/{plan_id}/reject", status_code=204, tags=["plans"], responses={409: {"model": Problem}})
    async def api_reject(plan_id: str, body: ReasonBody, user: ApiReject) -> Response:
        """Reject a plan awaiting approval, with a reason (supervisors)."""
        reason = clean_text(body.reason, "Reason", required=True, min_chars=3)
        await backend.reject(plan_id, user.name, reason)
        return Response(status_code=204)

    @app.post(
        "/api/plans/{plan_id}/replan",
        response_model=JobView,
        status_code=202,
        tags=["plans"],
        responses={409: {"model": Problem}},
    )
    async def api_replan(plan_id: str, user: ApiSubmit) -> JobView:
        """Draft a turned-down plan's work order again, the reasons going to the planner as
        feedback (engineers and supervisors); follow it at ``GET /api/work-orders/{id}``."""
        return await backend.replan(plan_id, user.name)

    @app.post(
        "/api/plans/{plan_id}/inspections/{image}/overrule",
        status_code=204,
        tags=["operator"],
        responses={409: {"model": Problem}},
    )
    async def api_overrule(plan_id: str, image: str, body: OverruleBody, user: ApiOverrule) -> Response:
        """Overrule a vision verdict of the plan's rehearsal (operators and supervisors): audited,
        and the image kept as a labelled example for the next training."""
        label = clean_text(body.label, "Label", required=True, max_chars=64)
        reason = clean_text(body.reason, "Reason", required=True, min_chars=3)
        await backend.overrule_inspection(plan_id, image, user.name, label, reason)
        return Response(status_code=204)

    @app.get("/api/confirmations", response_model=list[ConfirmationView], tags=["operator"])
    async def api_confirmations(user: ApiView) -> list[ConfirmationView]:
        """Hazardous steps waiting for a robot operator."""
        return await backend.pending_confirmations()

    @app.post("/api/plans/{plan_id}/steps/{step_id}/confirm", status_code=204, tags=["operator"])
    async def api_confirm(plan_id: str, step_id: str, body: ReasonBody, user: ApiConfirm) -> Response:
        """Confirm a hazardous step may run (robot operators)."""
        note = clean_text(body.reason, "Note", required=False)
        await backend.confirm_step(plan_id, step_id, user.name, note)
        return Response(status_code=204)

    @app.post("/api/plans/{plan_id}/steps/{step_id}/refuse", status_code=204, tags=["operator"])
    async def api_refuse(plan_id: str, step_id: str, body: ReasonBody, user: ApiRefuse) -> Response:
        """Refuse a hazardous step, with a reason (robot operators)."""
        reason = clean_text(body.reason, "Reason", required=True, min_chars=3)
        await backend.refuse_step(plan_id, step_id, user.name, reason)
        return Response(status_code=204)

    @app.post(
        "/api/estop/trip",
        status_code=204,
        tags=["operator"],
        responses={404: {"model": Problem, "description": "no robot of that name (nothing tripped)"}},
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": TripBody.model_json_schema()}},
            }
        },
    )
    async def api_trip(request: Request, user: ApiTrip) -> Response:
        """Latch the e-stop of one robot or of all (anyone logged in). Never refused for the body
        (see :class:`TripBody`) nor for a missing CSRF token; only an unknown robot is a 404."""
        try:
            body = json.loads(await request.body() or b"{}")
        except (ValueError, UnicodeDecodeError):
            body = {}  # garbled: trip every robot
        if not isinstance(body, dict):
            body = {}
        await trip(request, user, body.get("robot"), body.get("reason"))
        return Response(status_code=204)

    @app.post("/api/estop/reset", status_code=204, tags=["operator"])
    async def api_reset(body: ResetBody, user: ApiReset) -> Response:
        """Reset one robot's e-stop latch (robot operators only)."""
        robot = robot_field(body.robot)
        if not body.area_clear:
            raise FormError(["Area clear: confirm that nobody is in the robot's area before resetting."])
        note = clean_text(body.note, "Note", required=False)
        await backend.reset_estop(robot, user.name, note or "area checked clear")
        return Response(status_code=204)

    @app.post("/api/work-orders", response_model=JobView, status_code=202, tags=["work orders"])
    async def api_submit(body: WorkOrderBody, user: ApiSubmit) -> JobView:
        """Submit a work order; follow its progress at ``GET /api/work-orders/{id}``."""
        request = check_work_order(plant, body.text, body.recipe, body.params)
        return await backend.submit_work_order(request, user.name)

    @app.get("/api/work-orders", response_model=list[JobView], tags=["work orders"])
    async def api_jobs(user: ApiView) -> list[JobView]:
        """Recent work orders, newest first."""
        return await backend.jobs()

    @app.get("/api/work-orders/{job_id}", response_model=JobView, tags=["work orders"])
    async def api_job(job_id: str, user: ApiView) -> JobView:
        """A work order's stage, messages and plan once drafted."""
        job = await backend.job(job_id)
        if job is None:
            raise HTTPException(404, f"No work order {job_id!r}.")
        return job

    @app.get("/api/audit", response_model=list[AuditView], tags=["audit"])
    async def api_audit(user: ApiView, limit: int = 50) -> list[AuditView]:
        """The newest records of the audit log."""
        await write_login_reports()
        return await backend.audit_tail(max(1, min(limit, 500)))

    # ================================================================== pages

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/plant", status_code=303)

    @app.get("/login", include_in_schema=False)
    async def login_page(request: Request) -> Response:
        return render(request, "login.html", None, next=_safe_next(request.query_params.get("next")), username="")

    @app.post("/login", include_in_schema=False)
    async def login_post(request: Request) -> Response:
        form = await request.form()
        name, password, nxt = form.get("name"), form.get("password"), _safe_next(str(form.get("next") or ""))
        if not isinstance(name, str) or not isinstance(password, str) or not name.strip() or not password:
            problem = ["Please give your user name and password."]
            return render(request, "login.html", None, 400, next=nxt, username="", errors=problem)
        try:
            _, token = await log_in(request, name.strip()[:64], password[:1024], "form")
        except AuthError as exc:
            status = 429 if isinstance(exc, LoginLocked) else 401
            problem = [str(exc)[:1].upper() + str(exc)[1:] + "."]
            return render(request, "login.html", None, status, next=nxt, username=name.strip()[:64], errors=problem)
        response = RedirectResponse(nxt, status_code=303)
        set_cookie(request, response, token)
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout_post(request: Request) -> Response:
        user = await user_of(request)
        if user is not None:
            await run_in_threadpool(users.logout, token_of(request))
            await backend.audit(user.name, "logout", "console")
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/plant", include_in_schema=False)
    async def plant_page(request: Request, user: PageView) -> Response:
        inspections = await backend.recent_inspections()
        return render(request, "plant.html", user, svg=top_svg, snap=backend.feed.latest, inspections=inspections)

    @app.get("/plans", include_in_schema=False)
    async def plans_page(request: Request, user: PageView) -> Response:
        plans = await backend.list_plans()
        # A column for every live status; one for how plans ended only where some did.
        states = [s for s in PLAN_STATUSES if s not in TERMINAL or any(p.state == s for p in plans)]
        groups = [(s, [p for p in plans if p.state == s]) for s in states]
        return render(request, "plans.html", user, groups=groups, total=len(plans))

    async def plan_or_404(plan_id: str) -> PlanDetail:
        plan = await backend.get_plan(plan_id)
        if plan is None:
            raise HTTPException(404, f"There is no plan {plan_id!r}.")
        return plan

    async def plan_response(
        request: Request, user: User, plan: PlanDetail, status: int = 200, errors: list[str] | None = None
    ) -> Response:
        # A plan of a few hundred steps takes milliseconds to draw and render: off the event loop.
        return await run_in_threadpool(_plan_page, request, user, plan, status, errors)

    def _plan_page(request: Request, user: User, plan: PlanDetail, status: int, errors: list[str] | None) -> Response:
        times = schedule(plan.steps)
        return render(
            request,
            "plan.html",
            user,
            status,
            plan=plan,
            gantt=gantt_svg(plan.steps),
            rows=list(zip(plan.steps, times, strict=True)),
            failed_rules=[g for g in plan.guardrails if not g.passed],
            # The chart's own timing (the backend gives every step its start: the rehearsal's or
            # the plan's), so the makespan shown is where the chart ends.
            makespan=max((s + d for s, d in times), default=0.0),
            errors=errors or [],
        )

    @app.get("/plans/{plan_id}", include_in_schema=False)
    async def plan_page(request: Request, plan_id: str, user: PageView) -> Response:
        return await plan_response(request, user, await plan_or_404(plan_id))

    @app.get("/plans/{plan_id}/evidence/{name}", include_in_schema=False)
    async def evidence(plan_id: str, name: str, user: PageView) -> Response:
        path = await backend.evidence_file(plan_id, name)
        if path is None:
            raise HTTPException(404, f"No evidence {name!r} for plan {plan_id!r}.")
        return FileResponse(path)

    async def decide(request: Request, plan_id: str, user: User, approve: bool) -> Response:
        form = await request.form()
        try:
            if approve:
                reason = clean_text(form.get("reason"), "Reason", required=False)
                # The version the page showed (the form always sends it): a plan that changed
                # since, or a form that does not say which version it showed, is not approved.
                seen = clean_text(form.get("plan_hash"), "Plan version", required=True, max_chars=64)
                await backend.approve(plan_id, user.name, reason or "approved", seen)
            else:
                reason = clean_text(form.get("reason"), "Reason for rejecting", required=True, min_chars=3)
                await backend.reject(plan_id, user.name, reason)
        except (FormError, ActionRefused) as exc:
            return await plan_response(request, user, await plan_or_404(plan_id), *_problem(exc))
        return _done(f"/plans/{quote(plan_id)}", f"Plan {'approved' if approve else 'rejected'} by {user.name}.")

    @app.post("/plans/{plan_id}/approve", include_in_schema=False)
    async def approve_post(request: Request, plan_id: str, user: PageApprove) -> Response:
        return await decide(request, plan_id, user, approve=True)

    @app.post("/plans/{plan_id}/reject", include_in_schema=False)
    async def reject_post(request: Request, plan_id: str, user: PageReject) -> Response:
        return await decide(request, plan_id, user, approve=False)

    @app.post("/plans/{plan_id}/inspections/overrule", include_in_schema=False)
    async def overrule_post(request: Request, plan_id: str, user: PageOverrule) -> Response:
        form = await request.form()
        try:
            image = clean_text(form.get("image"), "Inspection image", required=True, max_chars=200)
            label = clean_text(form.get("label"), "Label", required=True, max_chars=64)
            reason = clean_text(form.get("reason"), "Reason for overruling", required=True, min_chars=3)
            await backend.overrule_inspection(plan_id, image, user.name, label, reason)
        except (FormError, ActionRefused) as exc:
            return await plan_response(request, user, await plan_or_404(plan_id), *_problem(exc))
        return _done(f"/plans/{quote(plan_id)}", f"Verdict overruled to {label} by {user.name}.")

    @app.post("/plans/{plan_id}/replan", include_in_schema=False)
    async def replan_post(request: Request, plan_id: str, user: PageSubmit) -> Response:
        try:
            job = await backend.replan(plan_id, user.name)
        except ActionRefused as exc:
            return await plan_response(request, user, await plan_or_404(plan_id), *_problem(exc))
        return RedirectResponse(f"/work-orders/{quote(job.id)}", 303)

    async def operator_page_response(
        request: Request, user: User, status: int = 200, errors: list[str] | None = None
    ) -> Response:
        return render(
            request,
            "operator.html",
            user,
            status,
            confirmations=await backend.pending_confirmations(),
            snap=backend.feed.latest,
            errors=errors or [],
        )

    @app.get("/operator", include_in_schema=False)
    async def operator_page(request: Request, user: PageView) -> Response:
        return await operator_page_response(request, user)

    async def step_action(request: Request, user: User, confirm: bool) -> Response:
        form = await request.form()
        try:
            plan_id = clean_text(form.get("plan_id"), "Plan", required=True, max_chars=100)
            step_id = clean_text(form.get("step_id"), "Step", required=True, max_chars=100)
            if _out_of_range(plan_id):
                raise ActionRefused(f"There is no plan {plan_id!r}.", 404)
            if confirm:
                note = clean_text(form.get("reason"), "Note", required=False)
                await backend.confirm_step(plan_id, step_id, user.name, note)
            else:
                note = clean_text(form.get("reason"), "Reason for refusing", required=True, min_chars=3)
                await backend.refuse_step(plan_id, step_id, user.name, note)
        except (FormError, ActionRefused) as exc:
            return await operator_page_response(request, user, *_problem(exc))
        return _done("/operator", f"Step {step_id} {'confirmed' if confirm else 'refused'} by {user.name}.")

    @app.post("/operator/confirm", include_in_schema=False)
    async def confirm_post(request: Request, user: PageConfirm) -> Response:
        return await step_action(request, user, confirm=True)

    @app.post("/operator/refuse", include_in_schema=False)
    async def refuse_post(request: Request, user: PageRefuse) -> Response:
        return await step_action(request, user, confirm=False)

    @app.post("/estop/trip", include_in_schema=False)
    async def trip_post(request: Request, user: PageTrip) -> Response:
        try:
            form = await request.form()
        except Exception:  # a garbled form still stops every robot
            form = FormData()
        back = _safe_next(str(form.get("next") or ""), "/operator")
        try:
            robot = await trip(request, user, form.get("robot"), form.get("reason"))
        except ActionRefused as exc:
            return await operator_page_response(request, user, *_problem(exc))
        return _done(back, f"E-stop tripped for {'all robots' if robot is None else robot} by {user.name}.")

    @app.post("/estop/reset", include_in_schema=False)
    async def reset_post(request: Request, user: PageReset) -> Response:
        form = await request.form()
        try:
            robot = robot_field(form.get("robot"))
            if form.get("area_clear") not in ("yes", "on", "true"):
                raise FormError(["Area clear: tick the box to confirm nobody is in the robot's area."])
            note = clean_text(form.get("note"), "Note", required=False)
            await backend.reset_estop(robot, user.name, note or "area checked clear")
        except (FormError, ActionRefused) as exc:
            return await operator_page_response(request, user, *_problem(exc))
        return _done("/operator", f"E-stop of {robot} reset by {user.name}.")

    async def work_orders_response(
        request: Request,
        user: User,
        status: int = 200,
        errors: list[str] | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        return render(
            request,
            "work_orders.html",
            user,
            status,
            jobs=await backend.jobs(),
            errors=errors or [],
            form=form or {},
            job_states=JOB_STATES,
        )

    @app.get("/work-orders", include_in_schema=False)
    async def work_orders_page(request: Request, user: PageView) -> Response:
        return await work_orders_response(request, user)

    @app.post("/work-orders", include_in_schema=False)
    async def work_order_post(request: Request, user: PageSubmit) -> Response:
        form = await request.form()
        raw = {k: v for k, v in form.items() if isinstance(v, str)}
        recipe = raw.get("recipe", "").strip()
        prefix = f"p.{recipe}."
        params = {k[len(prefix) :]: v for k, v in raw.items() if recipe and k.startswith(prefix)}
        try:
            req = check_work_order(plant, form.get("text"), recipe or None, params)
            job = await backend.submit_work_order(req, user.name)
        except (FormError, ActionRefused) as exc:
            return await work_orders_response(request, user, *_problem(exc), {k: v[:4000] for k, v in raw.items()})
        return RedirectResponse(f"/work-orders/{quote(job.id)}", 303)

    @app.get("/work-orders/{job_id}", include_in_schema=False)
    async def job_page(request: Request, job_id: str, user: PageView) -> Response:
        job = await backend.job(job_id)
        if job is None:
            raise HTTPException(404, f"There is no work order {job_id!r}.")
        return render(request, "job.html", user, job=job, job_states=JOB_STATES)

    @app.get("/audit", include_in_schema=False)
    async def audit_page(request: Request, user: PageView) -> Response:
        await write_login_reports()
        return render(request, "audit.html", user, records=await backend.audit_tail(200))

    return app
