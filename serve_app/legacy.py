"""Rolling upgrades across the sub-package move: the objects replicas pickle to each
other keep the names the previous release gave them, for one release.

During a rolling update (``serve deploy`` of a changed config) old and new replicas run
side by side, and every handle call pickles its arguments and result by module path.
The previous release had a flat ``serve_app``; this one moved those modules into rooms.
So that neither side meets a name it cannot import:

* the old module paths are aliases of the new modules (``sys.modules``), so a new
  replica unpickles what an old one sent;
* the classes that cross a handle keep their old ``__module__``, so what a new replica
  sends names only modules an old replica has.

Nothing else changes: the aliases are the very same module objects. Unwinding takes two
releases: the next one stops setting ``__module__`` (this release reads the new names
natively) but keeps the aliases (it must read what this release sends); the one after
deletes this file and its import in ``serve_app/__init__.py``.
``tests/unit/test_legacy.py`` checks every class that crosses a handle.
"""

from __future__ import annotations

import sys
from types import ModuleType

from serve_app.inference import defaults, policy, results
from serve_app.quota import gcra, usage
from serve_app.wire import TenantDefaults

# old module path -> (module now holding the classes, classes pickled under the old path)
LEGACY_MODULES: dict[str, tuple[ModuleType, tuple[type, ...]]] = {
    "serve_app.policy": (policy, (policy.InferenceParams,)),
    "serve_app.results": (
        results,
        (results.DetectionResult, results.Detection, results.ImageSize, results.Annotated),
    ),
    "serve_app.preferences": (defaults, (TenantDefaults,)),
    "serve_app.usage": (usage, (usage.Settlement, usage.UsageRow, usage.UsageCounts)),
}
# The flat release's ``serve_app.quota`` module is now the ``serve_app.quota`` package:
# its ``Decision`` is exported by the package itself (``serve_app/quota/__init__.py``).
QUOTA_PACKAGE_CLASSES = (gcra.Decision,)


def install() -> None:
    """Alias the old module paths and pickle crossing classes under them (idempotent)."""
    for old, (module, classes) in LEGACY_MODULES.items():
        sys.modules.setdefault(old, module)
        for cls in classes:
            cls.__module__ = old
    for cls in QUOTA_PACKAGE_CLASSES:
        cls.__module__ = "serve_app.quota"
