"""``tenantctl jwt …`` and ``tenantctl token mint``: tenants' identity providers, and
short-lived tokens the operator signs for batch jobs."""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from serve_app.constants import JWT_ALGORITHMS
from tenant_registry.cli.common import TENANT, Command, arg
from tenant_registry.errors import InvalidInput
from tenant_registry.store import Registry

SIGNING_KEY_ENV = "TENANTCTL_SIGNING_KEY"
MAX_TOKEN_TTL_S = 24 * 3600
ALGORITHMS = ("RS256", "ES256", "EdDSA")
assert set(ALGORITHMS) == JWT_ALGORITHMS  # the CLI offers exactly what the router accepts


def set_jwt(reg: Registry, args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    if args.issuer is not None:
        changes["issuer"] = args.issuer
    if args.audience is not None:
        changes["audience"] = args.audience
    if args.alg:
        changes["algorithms"] = tuple(args.alg)
    if args.public_key:
        try:
            changes["public_keys_pem"] = tuple(Path(p).read_text() for p in args.public_key)
        except OSError as exc:
            raise InvalidInput(f"cannot read a public key file: {exc.strerror}") from None
    if args.no_public_keys:
        changes["public_keys_pem"] = ()
    if args.jwks_url is not None:
        changes["jwks_url"] = args.jwks_url or None
    if not changes:
        raise InvalidInput(
            "nothing to change: pass --issuer, --audience, --alg, --public-key or --jwks-url"
        )
    settings = reg.set_jwt(args.tenant, **changes)
    source = f"{len(settings.public_keys_pem)} PEM keys"
    if settings.jwks_url:
        source += f" + JWKS {settings.jwks_url}"
    print(
        f"{args.tenant} accepts JWTs from {settings.issuer} for {settings.audience} "
        f"({', '.join(settings.algorithms)}, {source}); run `tenantctl apply`",
        file=sys.stderr,
    )
    return 0


def clear(reg: Registry, args: argparse.Namespace) -> int:
    reg.clear_jwt(args.tenant)
    print(f"{args.tenant} no longer accepts JWTs; run `tenantctl apply`", file=sys.stderr)
    return 0


def mint(reg: Registry, args: argparse.Namespace) -> int:
    """A short-lived JWT for a tenant, signed with an operator-held private key."""
    import jwt
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    settings = reg.tenant(args.tenant).jwt
    if settings is None:
        raise InvalidInput(
            f"{args.tenant} has no JWT settings: `tenantctl jwt set {args.tenant} --issuer … "
            "--audience … --public-key operator.pub` first"
        )
    key_path = args.private_key or os.environ.get(SIGNING_KEY_ENV)
    if not key_path:
        raise InvalidInput(f"pass --private-key FILE or set ${SIGNING_KEY_ENV}")
    try:
        private_key = load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot load the signing key {key_path}: {exc}") from None
    if not 1 <= args.ttl <= MAX_TOKEN_TTL_S:
        raise InvalidInput(f"--ttl must be 1..{MAX_TOKEN_TTL_S} seconds: tokens are short-lived")
    now = int(time.time())
    claims = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": args.subject,
        "iat": now,
        "exp": now + args.ttl,
        "jti": uuid.uuid4().hex,
    }
    alg = args.alg or settings.algorithms[0]
    if alg not in settings.algorithms:
        raise InvalidInput(f"{args.tenant} accepts {', '.join(settings.algorithms)}, not {alg}")
    try:
        token = jwt.encode(claims, private_key, algorithm=alg)  # type: ignore[arg-type]
    except (jwt.PyJWTError, TypeError, ValueError) as exc:
        raise InvalidInput(f"the key cannot sign {alg}: {exc}") from None
    print(token)
    print(f"token for {args.tenant} ({args.subject}), valid {args.ttl} s", file=sys.stderr)
    return 0


COMMANDS = [
    Command(
        ("jwt", "set"),
        set_jwt,
        "accept JWTs from an issuer (public keys only)",
        [
            TENANT,
            arg("--issuer"),
            arg("--audience"),
            arg("--alg", action="append", choices=ALGORITHMS),
            arg("--public-key", action="append", help="PEM public key file (repeatable)"),
            arg("--no-public-keys", action="store_true", help="drop the PEM keys"),
            arg(
                "--jwks-url",
                help="the IdP's JWKS document (https; cached, refetched on key rotation); "
                "'' removes it",
            ),
        ],
    ),
    Command(("jwt", "clear"), clear, "stop accepting JWTs", [TENANT]),
    Command(
        ("token", "mint"),
        mint,
        "print a short-lived JWT for a tenant",
        [
            TENANT,
            arg("--subject", default="operator", help="the sub claim, e.g. the batch job"),
            arg("--ttl", type=int, default=900, help="seconds (max one day)"),
            arg("--alg", choices=ALGORITHMS),
            arg(
                "--private-key",
                help=f"PEM private key file (or ${SIGNING_KEY_ENV}); "
                "it never enters a Serve config",
            ),
        ],
    ),
]
