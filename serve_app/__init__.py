"""The data plane: a Ray Serve application serving tenants' YOLO models.

Rooms, from the edge inwards (docs/architecture.md): ``http`` (the router ingress),
``auth``, ``quota``, ``inference``, ``models``, ``observability``; below them the
shared ``config``, ``wire``, ``errors``, ``constants``, ``blobs`` and ``ray_compat``.
"""

from serve_app import legacy

legacy.install()  # one release: see serve_app/legacy.py
