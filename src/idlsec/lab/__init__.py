"""idlsec lab: a local HTTP API over the engine and the TypeScript single-page app that uses it.

    idlsec serve --runs runs/          # then open http://127.0.0.1:8765

Needs the ``lab`` extra (fastapi, uvicorn, python-multipart)."""

from __future__ import annotations


def create_app(*args, **kwargs):
    """See :func:`idlsec.lab.app.create_app` (imported lazily: fastapi is an optional extra)."""
    from .app import create_app as _create

    return _create(*args, **kwargs)


__all__ = ["create_app"]
