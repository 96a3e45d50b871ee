"""The dashboard at ``/``: server-rendered HTML pages over the JSON API, with one small CSS
and one small vanilla JS file served by the service itself (no build step, no CDN).

``install_dashboard(app)`` mounts the static files and includes the pages' router and the
sign-in pages (:mod:`service.api.dashboard.access`: with auth on, every page shows the
signed-in key's tenant).
"""

from service.api.dashboard.routes import install_dashboard, router

__all__ = ["install_dashboard", "router"]
