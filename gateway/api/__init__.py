"""The REST API for integrators and managers (FastAPI; build it with
``gateway.api.app.create_app``): one router per resource, API tokens and their scopes
(``auth``, ``models``), request bodies and errors.

May import the stages below it (alerting, work orders, storage, provisioning, notify, the web
pages, ingest, registry, core), ``rules`` and ``devices``; never the runtime or the CLI: the
running gateway hands its live objects in (``context``).
"""
