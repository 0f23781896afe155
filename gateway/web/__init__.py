"""The property managers' web page: alert inbox, work-order board and community view.

``pages.mount_web(app)`` adds the page to an API built by ``gateway.api.app.create_app``: a
server-rendered HTML shell at ``/ui/`` and its JavaScript and CSS under a versioned static
path. The page is a small vanilla JavaScript app that talks to the same API with the
user's token (``Authorization: Bearer``); it needs no build step and nothing from a CDN.

May import ``gateway.core`` only (it serves files; the API below the page is ``gateway.api``).
"""
