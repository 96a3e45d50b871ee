"""Signing in to the dashboard: ``/ui/sign-in`` (paste an API key; it is kept in the HttpOnly,
``SameSite=Strict`` cookie :data:`~service.api.auth.KEY_COOKIE`) and ``/ui/sign-out`` (a POST,
from the button in every page's header; a GET shows that button).

A sign-in or sign-out posted from another origin is refused before it gets here
(:mod:`service.api.same_origin`): another page can neither sign a visitor in with its own key
nor sign them out.

With auth on, a page asked for without a valid cookie answers 303 to the sign-in page, which
sends the user back where they were once signed in; every page shows the signed-in tenant's
objects only (``PageTenant``). With auth off, there is no signing in: every page shows the
tenant ``default``.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from service.api.auth import KEY_COOKIE, tenant_of_key, tenant_of_key_off_loop
from service.api.dashboard.render import render_page
from service.config import Settings
from service.errors import Unauthorized
from service.keys import DEFAULT_TENANT
from service.keys.service import KEY_LENGTH

router = APIRouter(include_in_schema=False)

SIGN_IN_PATH = "/ui/sign-in"
SIGN_OUT_PATH = "/ui/sign-out"
#: Longer than any key, so a pasted key with stray whitespace still fits; more is not a key.
MAX_FORM_KEY = 2 * KEY_LENGTH


class SignInRequired(Exception):
    """A page was asked for without a valid key: answered with a redirect to sign in."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def _auth_on(request: Request) -> bool:
    settings: Settings = request.app.state.settings
    return settings.auth == "on"


def _local_path(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/`` (no open redirect: ``//evil``,
    ``https://evil`` and backslash tricks all fall back)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


def page_tenant(request: Request) -> str:
    """The tenant a page shows: ``default`` with auth off, else the signed-in key's tenant;
    :class:`SignInRequired` without a cookie, or with one no longer valid (revoked)."""
    if not _auth_on(request):
        return DEFAULT_TENANT
    key = request.cookies.get(KEY_COOKIE)
    wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not key:
        raise SignInRequired(wanted)
    try:
        return tenant_of_key(request, key)
    except Unauthorized:
        raise SignInRequired(wanted) from None


PageTenant = Annotated[str, Depends(page_tenant)]


def signed_in(request: Request, tenant: str) -> str | None:
    """The tenant to name in the page's header: none while auth is off."""
    return tenant if _auth_on(request) else None


def _to_sign_in(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    return RedirectResponse(f"{SIGN_IN_PATH}?next={quote(exc.next_path, safe='')}", 303)


def _form(*, next_path: str, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    response = render_page(
        "sign_in.html",
        status_code=status_code,
        title="Sign in",
        signed_in=None,
        error=error,
        next=next_path,
        max_key_length=MAX_FORM_KEY,
    )
    if status_code == 401:
        # A 401 names its scheme (RFC 9110); a browser shows the page and asks nothing.
        response.headers["WWW-Authenticate"] = 'Bearer realm="batchwise"'
    return response


@router.get(SIGN_IN_PATH, response_class=HTMLResponse)
def sign_in_form(request: Request, next: str | None = None) -> Response:
    next_path = _local_path(next)
    if not _auth_on(request):
        return RedirectResponse(next_path, 303)
    error = None
    key = request.cookies.get(KEY_COOKIE)
    if key:
        # Sent here with a cookie: it is no longer valid (or a bookmark): say which.
        try:
            tenant_of_key(request, key)
        except Unauthorized as exc:
            error = exc.detail
        else:
            return RedirectResponse(next_path, 303)
    response = _form(next_path=next_path, error=error)
    if error is not None:
        response.delete_cookie(KEY_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.post(SIGN_IN_PATH, response_class=HTMLResponse)
async def sign_in(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=4, max_part_size=4 * MAX_FORM_KEY)
    next_path = _local_path(str(form.get("next") or ""))
    if not _auth_on(request):
        return RedirectResponse(next_path, 303)
    key = str(form.get("key") or "").strip()
    if not key:
        return _form(next_path=next_path, error="Paste an API key.", status_code=401)
    if len(key) > MAX_FORM_KEY:
        return _form(
            next_path=next_path,
            error=f"That is not an API key: {len(key):,} characters long.",
            status_code=401,
        )
    try:
        await tenant_of_key_off_loop(request, key)
    except Unauthorized as exc:
        return _form(next_path=next_path, error=exc.detail, status_code=401)
    response = RedirectResponse(next_path, 303)
    response.set_cookie(
        KEY_COOKIE,
        key,
        path="/",
        httponly=True,  # page scripts never read the key; fetch sends it
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get(SIGN_OUT_PATH, response_class=HTMLResponse)
def sign_out_form() -> HTMLResponse:
    """A page with the sign-out button: signing out is a POST, so that no link or image of
    another page can do it."""
    return render_page("sign_out.html", title="Sign out", signed_in=None)


@router.post(SIGN_OUT_PATH)
def sign_out() -> Response:
    response = RedirectResponse(SIGN_IN_PATH, 303)
    response.delete_cookie(KEY_COOKIE, path="/", httponly=True, samesite="strict")
    return response


def install_access(app: FastAPI) -> None:
    """Serve the sign-in pages and turn :class:`SignInRequired` into a redirect to them."""
    app.add_exception_handler(SignInRequired, _to_sign_in)
    app.include_router(router)


__all__ = [
    "SIGN_IN_PATH",
    "SIGN_OUT_PATH",
    "PageTenant",
    "SignInRequired",
    "install_access",
    "page_tenant",
    "signed_in",
]
