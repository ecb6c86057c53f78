"""The web layer: a JSON HTTP API, a live event stream and a dashboard, over a Conveyor app.

A thin adapter: every operation is a call to :class:`~conveyor.Conveyor`; what is legal comes
from the lifecycle table through ``Job.legal_actions``. Needs the ``web`` extra
(``pip install 'conveyor[web]'``: Starlette and uvicorn).

- :func:`serve` runs it under uvicorn (the CLI's ``conveyor dashboard``).
- :func:`create_app` builds the ASGI app, to mount elsewhere or test in-process; protected by
  conveyor's tokens (:class:`AuthConfig`) or by the mounting application's own users
  (:class:`HostAuth`).
"""

from conveyor.web.asgi import create_app
from conveyor.web.hostauth import HostAuth, HostUser
from conveyor.web.security import AuthConfig, Role
from conveyor.web.server import serve

__all__ = ["AuthConfig", "HostAuth", "HostUser", "Role", "create_app", "serve"]
