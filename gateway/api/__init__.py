"""REST API for integrators and managers (FastAPI); build it with :func:`create_app`."""

from gateway.api.app import create_app

__all__ = ["create_app"]
