"""Quota: GCRA arithmetic, router allowances and admission, the ledger deployment and its
store, settlements and usage.

``Decision`` is exported here because the previous release pickled it as
``serve_app.quota.Decision`` (see ``serve_app/legacy.py``; one release).
"""

from serve_app.quota.gcra import Decision

__all__ = ["Decision"]
