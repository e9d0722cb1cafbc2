"""Control plane: tenant records, keys, quotas, model versions; renders Serve configs.

Imports the data plane's config schema (``serve_app.config``); ``serve_app`` never
imports this package. Built out in a later issue.
"""
