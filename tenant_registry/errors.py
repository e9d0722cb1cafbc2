"""Typed errors of the control plane; each message says how to fix the call."""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every error ``tenantctl`` reports; ``exit_code`` is the process status."""

    exit_code = 1


class InvalidInput(RegistryError):
    exit_code = 2


class NotFound(RegistryError):
    exit_code = 3


class Conflict(RegistryError):
    exit_code = 4


class ClusterError(RegistryError):
    exit_code = 5
