"""The practitioners' portal: FastAPI, server-rendered Jinja2 pages, no JavaScript.

- Sign-in with a user of the portal's user store (scrypt hashes); after ``max_failures`` failed
  attempts within ``lockout_s`` the name is locked out for ``lockout_s``.
- Sessions are signed cookies (Starlette's ``SessionMiddleware``, key in
  ``HUB_HOME/keys/web_session.key``), ``SameSite=Strict``, ending after ``idle_timeout_s``
  without a request and ``max_session_s`` in all. Signing in starts a new session.
- CSRF: every form carries the session's token and every POST is refused without it; the
  sign-in form's token lives in the session cookie the sign-in page sets before anyone signs in.
- Every response carries X-Frame-Options, X-Content-Type-Options, a Content-Security-Policy
  (``default-src 'self'``, so no inline script or style) and Referrer-Policy, and HSTS when
  served over HTTPS (or with ``secure_cookies``, behind a TLS proxy); pages are not cached.
- Sign-in is rate limited per client address (``login_attempts`` per ``login_window_s``), on top
  of the per-name lock-out: guessing across many names from one address is slowed too.
- Roles are checked on every route: practitioners and mentors see their audience's view, a
  mentor only their own mentees; auditors see the audit trail's reports
  (:mod:`hub.web.auditor`) and no subject pages; every other role gets 403 there.
- Every page that shows a subject puts an ``access`` entry on the audit trail first, and is not
  shown when the trail does not take it (:mod:`hub.web.audit`).

The routes are made inside ``create_app`` (they close over its stores), so this module does not
use ``from __future__ import annotations``: FastAPI reads the dependency annotations at runtime.
"""

import datetime as dt
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import structlog
from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import MutableHeaders
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.domain.errors import HubError, InfraError, InputError
from hub.web import present
from hub.web.audit import AccessRecorder
from hub.web.auditor import AuditorDesk, DeskHolder, add_auditor_routes, open_desk
from hub.web.config import WebConfig, session_key
from hub.web.passwords import dummy_hash, verify_password
from hub.web.reader import MIN_QUERY, Views
from hub.web.users import User, UserStore, normalise_username, open_user_store

log = structlog.get_logger(__name__)
HERE = Path(__file__).resolve().parent
PORTAL_ROLES = frozenset({"practitioner", "mentor"})
SECURE_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = "max-age=31536000; includeSubDomains"


class SignInRequired(Exception):
    def __init__(self, next_path: str, expired: bool = False) -> None:
        self.next_path = next_path
        self.expired = expired


class Refused(Exception):
    """A request the user's role or session does not allow (403), or a subject they cannot
    see (404: the same answer as a subject that does not exist)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class SecureHeaders:
    """Adds the security headers to every response, error pages included; HSTS when the request
    came over HTTPS or ``hsts`` says a TLS proxy is in front."""

    def __init__(self, app: ASGIApp, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")
        https = self.hsts or scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURE_HEADERS.items():
                    headers[name] = value
                headers["Cache-Control"] = "private, max-age=300" if static else "no-store"
                if https:
                    headers["Strict-Transport-Security"] = HSTS
            await send(message)

        await self.app(scope, receive, send_with_headers)


class AttemptLimit:
    """At most ``limit`` attempts per key within ``window_s`` (a sliding window, in memory: one
    process; the per-name lock-out in the user store holds across processes)."""

    MAX_KEYS = 10_000

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, now: float) -> float:
        """Count an attempt; 0 if allowed, else the seconds until the next one is."""
        with self._lock:
            if len(self._seen) >= self.MAX_KEYS:
                for stale in [k for k, q in self._seen.items() if now - q[-1] > self.window_s]:
                    del self._seen[stale]
            times = self._seen.setdefault(key, deque())
            while times and now - times[0] >= self.window_s:
                times.popleft()
            if len(times) >= self.limit:
                return self.window_s - (now - times[0])
            times.append(now)
            return 0.0


def _safe_next(path: str | None) -> str:
    """Only a path on this site (never ``//host`` or a URL) is a place to go after sign-in."""
    if path and path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/"


def create_app(
    config: WebConfig,
    *,
    users: UserStore | None = None,
    recorder: AccessRecorder | None = None,
    views: Views | None = None,
    desk: AuditorDesk | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The portal. ``users``, ``recorder``, ``views`` and the auditors' ``desk`` default to the
    ones ``config`` names."""
    if users is None:
        users = open_user_store(config.users_url)
    if recorder is None:
        from hub.adapters.kafka import SafeProducer, producer_config

        servers = config.bootstrap_servers
        recorder = AccessRecorder(
            lambda: SafeProducer(producer_config(servers, **{"message.timeout.ms": 5000})),
            config.audit_topic,
            timeout_s=config.audit_timeout_s,
        )
    views = views or Views(config.view_url)
    store, trail, view_set = users, recorder, views
    desks = DeskHolder((lambda: desk) if desk is not None else (lambda: open_desk(config)))
    attempts = AttemptLimit(config.login_attempts, config.login_window_s)

    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["when"] = present.when
    templates.env.filters["label"] = present.label
    templates.env.tests["mapping"] = lambda v: isinstance(v, dict)
    templates.env.tests["sequence"] = lambda v: isinstance(v, list)

    # -- sessions and users ------------------------------------------------------------------
    def csrf_token(request: Request) -> str:
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = secrets.token_urlsafe(32)
            request.session["csrf"] = token
        return token

    async def csrf_guard(request: Request) -> None:
        """Every state-changing request must carry the session's token in its form."""
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return
        form = await request.form()
        sent = form.get("csrf_token")
        expected = request.session.get("csrf")
        if not (
            isinstance(sent, str)
            and isinstance(expected, str)
            and hmac.compare_digest(sent.encode(), expected.encode())
        ):
            log.warning("csrf_refused", path=request.url.path)
            raise Refused(403, "This form has expired or did not come from this site. "
                               "Reload the page and try again.")  # fmt: skip

    def signed_in(request: Request) -> User | None:
        session = request.session
        name = session.get("user")
        if not isinstance(name, str):
            return None
        now = clock()
        seen = session.get("seen")
        if not isinstance(seen, (int, float)) or now - seen > config.idle_timeout_s:
            session.clear()
            request.state.expired = True
            return None
        since = session.get("since")
        if not isinstance(since, (int, float)) or now - since > config.max_session_s:
            session.clear()
            request.state.expired = True
            return None
        user = store.get(name)
        if user is None:
            session.clear()
            return None
        session["seen"] = now
        return user

    def require(*roles: str) -> Callable[[Request], User]:
        def dependency(request: Request) -> User:
            user = signed_in(request)
            if user is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                raise SignInRequired(target, expired=getattr(request.state, "expired", False))
            request.state.user = user
            if user.role not in roles:
                trail.event(
                    "access_denied", outcome="denied", actor=user.username, role=user.role,
                    audience=user.audience, reason=f"role {user.role} on {request.url.path}",
                )  # fmt: skip
                raise Refused(403, "Your role does not give access to this page.")
            return user

        return dependency

    def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        context.setdefault("user", getattr(request.state, "user", None))
        context["csrf_token"] = csrf_token(request)
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    def render_error(request: Request, status_code: int, message: str) -> Response:
        """An error page that starts no session: a refused cross-site request (which arrives
        without the SameSite=Strict cookie) must not replace the user's session cookie."""
        token = request.session.get("csrf")
        context = {"user": getattr(request.state, "user", None), "message": message,
                   "csrf_token": token if isinstance(token, str) else ""}  # fmt: skip
        return templates.TemplateResponse(request, "error.html", context, status_code=status_code)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        trail.close()
        view_set.dispose()
        desks.close()

    app = FastAPI(
        title="Hub portal",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(csrf_guard)],
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_key(config.session_key_path),
        session_cookie="hub_session",
        max_age=config.max_session_s,
        same_site="strict",
        https_only=config.secure_cookies,
    )
    app.add_middleware(SecureHeaders, hsts=config.secure_cookies)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        query = {"next": exc.next_path, **({"expired": "1"} if exc.expired else {})}
        return RedirectResponse(f"/login?{urlencode(query)}", status_code=303)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        return render_error(request, exc.status, exc.message)

    @app.exception_handler(HubError)
    async def _hub_error(request: Request, exc: HubError) -> Response:
        if isinstance(exc, InputError):
            return render_error(request, 400, str(exc))
        log.error("page_failed", path=request.url.path, error=str(exc))
        message = str(exc) if isinstance(exc, InfraError) else "The hub could not answer."
        return render_error(request, 503, message)

    # -- pages -------------------------------------------------------------------------------
    @app.get("/")
    def home(request: Request) -> Response:
        user = signed_in(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        return RedirectResponse("/auditor" if user.role == "auditor" else "/search", 303)

    @app.get("/login")
    def login_form(request: Request, next: str = "/", expired: str | None = None) -> Response:
        if signed_in(request) is not None:
            return RedirectResponse(_safe_next(next), status_code=303)
        notice = "Your session ended. Please sign in again." if expired else None
        return render(request, "login.html", next=_safe_next(next), notice=notice)

    @app.post("/login")
    def login(
        request: Request,
        username: Annotated[str, Form(max_length=200)],
        password: Annotated[str, Form(max_length=1024)],
        next: Annotated[str, Form()] = "/",
    ) -> Response:
        name = normalise_username(username)
        address = request.client.host if request.client else "unknown"
        wait_s = attempts.allow(address, clock())
        if wait_s:
            trail.event("login_failed", outcome="denied", actor=None,
                        reason="too many sign-in attempts from one address")  # fmt: skip
            log.warning("sign_in_rate_limited", attempts=config.login_attempts,
                        window_s=config.login_window_s)  # fmt: skip
            return render(
                request, "login.html", 429, next=_safe_next(next),
                error=f"Too many sign-in attempts. Try again in {int(wait_s) + 1} second(s).",
            )  # fmt: skip
        now = dt.datetime.fromtimestamp(clock(), dt.UTC)
        window = dt.timedelta(seconds=config.lockout_s)
        locked = store.locked_until(name, now)
        user = store.get(name) if locked is None else None
        actor = name if user is not None else None
        if locked is not None:
            trail.event("login_failed", outcome="denied", actor=actor, reason="locked out")
            return _locked(request, locked, now, next)
        ok = verify_password(password, user.password_hash if user else dummy_hash())
        if not ok or user is None:
            now_locked = store.record_failure(name, now, config.max_failures, window)
            trail.event(
                "login_failed", outcome="denied", actor=actor,
                reason="locked out" if now_locked else "wrong user name or password",
                details={"known_user": "yes" if user else "no"},
            )  # fmt: skip
            if now_locked:
                return _locked(request, now + window, now, next)
            return render(request, "login.html", 401, next=_safe_next(next),
                          error="Wrong user name or password.", username=name)  # fmt: skip
        store.clear_failures(name)
        request.session.clear()  # a new session: nothing from before sign-in carries over
        stamp = clock()
        request.session.update(user=user.username, since=stamp, seen=stamp)
        csrf_token(request)
        trail.event("login_ok", outcome="ok", actor=user.username, role=user.role,
                    audience=user.audience)  # fmt: skip
        log.info("signed_in", user=user.username, role=user.role, audience=user.audience)
        target = "/auditor" if user.role == "auditor" else _safe_next(next)
        return RedirectResponse(target, status_code=303)

    def _locked(request: Request, until: dt.datetime, now: dt.datetime, next: str) -> Response:
        minutes = max(1, int((until - now).total_seconds() + 59) // 60)
        return render(
            request, "login.html", 429, next=_safe_next(next),
            error=f"Too many failed sign-ins. Try again in {minutes} minute(s).",
        )  # fmt: skip

    @app.post("/logout")
    def logout(request: Request) -> Response:
        user = signed_in(request)
        request.session.clear()
        if user is not None:
            log.info("signed_out", user=user.username)
        return RedirectResponse("/login", status_code=303)

    PortalUser = Annotated[User, Depends(require(*PORTAL_ROLES))]

    @app.get("/search")
    def search(request: Request, user: PortalUser, q: str = "") -> Response:
        reader = view_set.reader(user.audience)
        query = q.strip()[:100]
        mentees = reader.mentees(user.mentor_id or "") if user.role == "mentor" else None
        if query:
            results = reader.search(query, within=mentees)
        else:
            results = reader.subjects(mentees) if mentees is not None else []
        if results:
            trail.access(
                actor=user.username, role=user.role, audience=user.audience, page="search",
                subject=results[0].key if len(results) == 1 else None,
                details={"results": str(len(results)), "query": "yes" if query else "no"},
            )  # fmt: skip
        return render(request, "search.html", q=query, results=results, min_query=MIN_QUERY,
                      mentor=user.role == "mentor")  # fmt: skip

    @app.get("/subject")
    def subject(
        request: Request,
        user: PortalUser,
        scheme: str,
        id: str,  # noqa: A002 - the query parameter's name
    ) -> Response:
        key = (scheme[:64], id[:255])
        reader = view_set.reader(user.audience)
        mentor = user.role == "mentor"
        if mentor and key not in reader.mentees(user.mentor_id or ""):
            trail.event(
                "access_denied", outcome="denied", actor=user.username, role=user.role,
                audience=user.audience, subject=key, reason="not a mentee of this mentor",
            )  # fmt: skip
            raise Refused(404, "There is no such person in your view.")
        record = reader.subject(key)
        if record is None:
            raise Refused(404, "There is no such person in your view.")
        trail.access(
            actor=user.username, role=user.role, audience=user.audience, page="subject",
            subject=key, clause_ids=record.clause_ids, purposes=record.purposes,
            details={"events": str(len(record.timeline))},
        )  # fmt: skip
        agency = user.audience.split(".")[0]
        return render(
            request, "subject.html", record=record, mentor=mentor,
            sections=present.status_sections(record.status, mentor=mentor),
            referrals=[] if mentor else present.referrals(record.status),
            plans=present.plans(record.status),
            tasks=present.tasks(record.status, agency, mentor=mentor),
        )  # fmt: skip

    add_auditor_routes(app, auditor=require("auditor"), render=render, trail=trail, desk=desks)
    return app
