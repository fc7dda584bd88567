"""The dashboard at ``/``: a server-rendered shell, its static assets, and the browser login.

Why these pieces: everything ships in the package (``rm/dashboard/``), so the dashboard works
with no internet; the page itself only polls the JSON API, so what a person sees is what the
API says. Login takes a token once, from the login form or a ``/?token=`` link (as Jupyter
does), and trades it at once for an HttpOnly, SameSite=Strict cookie holding a server-side
session id (:mod:`rm.sessions`; logout ends it); a ``?token=`` is stripped from the address by
a redirect so it does not stay in the history or a screenshot.
Static assets need a session like any other data (only ``/healthz`` is open); the login page is
self-contained for that reason.
"""

from __future__ import annotations

import html
import time
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from rm.api.deps import SESSION_COOKIE, Caller, caller
from rm.auth import lookup
from rm.sessions import SESSION_TTL_S, close_session, open_session, session_token

router = APIRouter(include_in_schema=False)
ASSETS = {"app.js": "text/javascript", "chart.js": "text/javascript", "style.css": "text/css"}


def _asset(name: str) -> str:
    return resources.files("rm").joinpath("dashboard", name).read_text()


def _signed_in(request: Request) -> bool:
    session_id = request.cookies.get(SESSION_COOKIE)
    return bool(session_id) and session_token(request.app.state.runtime.store, session_id, time.time()) is not None


def _signed_in_as(request: Request, secret: str) -> Response:
    """Open a session for the token ``secret`` and go to ``/`` with its cookie (or back to the login)."""
    store = request.app.state.runtime.store
    token = lookup(store, secret) if secret else None
    if token is None:
        return _login_page("That token is not valid.", status.HTTP_401_UNAUTHORIZED)
    response = RedirectResponse("/", status.HTTP_303_SEE_OTHER, headers={"Cache-Control": "no-store"})
    response.set_cookie(SESSION_COOKIE, open_session(store, token.id, time.time()), max_age=int(SESSION_TTL_S),
                        httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/")
    return response


def _login_page(message: str = "", code: int = 200) -> HTMLResponse:
    page = _asset("login.html").replace("{{message}}", html.escape(message))
    return HTMLResponse(page, status_code=code, headers={"Cache-Control": "no-store"})


@router.get("/")
def index(request: Request, token: str | None = None) -> Response:
    runtime = request.app.state.runtime
    if token is not None:  # a ?token= link: exchange it at once, and strip it from the address
        return _signed_in_as(request, token.strip())
    if not _signed_in(request):  # 401 like every other route without a token, with the form as its body
        return _login_page(code=status.HTTP_401_UNAUTHORIZED)
    page = _asset("index.html").replace("{{cluster}}", html.escape(runtime.config().cluster))
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


def _cross_site(request: Request) -> bool:
    """A form posted from another site (login CSRF: signing a victim in as the attacker)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")  # "null" under our no-referrer policy: Sec-Fetch-Site decides then
    return origin not in (None, "null") and urlsplit(origin).netloc != request.headers.get("host", "")


@router.post("/login")
async def login(request: Request) -> Response:
    if _cross_site(request):
        return _login_page("Sign in from this page, not from another site.", status.HTTP_403_FORBIDDEN)
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return _signed_in_as(request, (fields.get("token") or [""])[0].strip())


@router.post("/logout")
def logout(request: Request) -> Response:
    """End the session server-side (the cookie alone would be a copyable credential)."""
    if not _signed_in(request):
        return _login_page("You are signed out.", status.HTTP_401_UNAUTHORIZED)
    close_session(request.app.state.runtime.store, request.cookies[SESSION_COOKIE])
    response = RedirectResponse("/", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/static/{name}")
def asset(name: str, who: Caller = Depends(caller)) -> Response:  # a session or a bearer token, like any endpoint
    if name not in ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no asset {name}")
    return Response(_asset(name), media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})
