"""The interactive API docs at ``/docs``, with Swagger UI's assets served by the service itself.

No CDN: the docs must work air-gapped. The assets come from the ``swagger-ui-bundle-v2`` wheel
(Swagger UI 5.x, which renders OpenAPI 3.1 as FastAPI emits it; 4.x cannot).

The page has no inline script: Swagger UI is started by ``/docs/init.js``, so the pages'
Content-Security-Policy (:mod:`service.api.security_headers`) can forbid inline scripts. No
OAuth2 redirect page either: the API's only scheme is a bearer key, which "Authorize" takes.
"""

from __future__ import annotations

import html
import json

from fastapi import FastAPI
from fastapi.openapi.docs import swagger_ui_default_parameters
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS_URL = "/docs/assets"
INIT_URL = "/docs/init.js"


def _init_script(openapi_url: str) -> str:
    """What FastAPI's page runs inline: Swagger UI on ``openapi_url`` with its defaults."""
    parameters = {"url": openapi_url, **swagger_ui_default_parameters}
    return (
        f"window.ui = SwaggerUIBundle(Object.assign({json.dumps(parameters)}, {{\n"
        "  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],\n"
        "}));\n"
    )


def _page(title: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{ASSETS_URL}/swagger-ui.css">
<link rel="icon" href="{ASSETS_URL}/favicon-32x32.png">
<title>{html.escape(title)}</title>
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS_URL}/swagger-ui-bundle.js"></script>
<script src="{INIT_URL}"></script>
</body>
</html>
"""


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs``; the app must be built with ``docs_url=None``."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    page = _page(f"{app.title} — API docs")
    script = _init_script(app.openapi_url or "/openapi.json")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get(INIT_URL, include_in_schema=False)
    def swagger_ui_init() -> Response:
        return Response(script, media_type="text/javascript")
