"""CURVE key pairs for encrypting and authenticating robot-server traffic on a shared network.

Each side has a key pair in two files made by ``agent-runtime keys``: ``NAME.key`` (public, safe to
copy) and ``NAME.key_secret`` (secret, readable by its owner only). The server loads its own secret
file and a directory of the public keys of the robots it accepts; a robot loads its own secret file
and the server's public file. The files are ZeroMQ's certificate format (``zmq.auth``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import zmq
import zmq.auth


class KeyFileError(ValueError):
    """A key file or directory is missing or unusable; the message says which and what to do."""


def create_keypair(directory: Path, name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``directory/NAME.key`` and ``directory/NAME.key_secret``; the secret file is mode 0600.

    Returns:
        The paths of the public and the secret file.

    Raises:
        KeyFileError: the files exist and ``overwrite`` is false, or ``name`` is not a plain file name.
    """
    _require_curve()
    if not name or Path(name).name != name or name.startswith("."):
        raise KeyFileError(f"key name {name!r} must be a plain file name such as 'server' or 'robot1'")
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    existing = [str(p) for p in (public, secret) if p.exists()]
    if existing and not overwrite:
        raise KeyFileError(f"{', '.join(existing)} already exist; choose another name or pass --overwrite")
    directory.mkdir(parents=True, exist_ok=True)
    made_public, made_secret = zmq.auth.create_certificates(str(directory), name)
    os.chmod(made_secret, 0o600)
    return Path(made_public), Path(made_secret)


def load_keypair(secret_file: Path) -> tuple[bytes, bytes]:
    """The (public, secret) Z85 keys from a ``NAME.key_secret`` file."""
    _require_curve()
    public, secret = _load(secret_file)
    if secret is None:
        raise KeyFileError(f"{secret_file} holds no secret key; pass the NAME.key_secret file, not NAME.key")
    return public, secret


def load_public_key(public_file: Path) -> bytes:
    """The Z85 public key from a ``NAME.key`` (or ``NAME.key_secret``) file."""
    _require_curve()
    return _load(public_file)[0]


def check_authorized_dir(directory: Path) -> None:
    """Refuse a directory of authorized robot keys that does not exist or holds no ``*.key`` file."""
    if not directory.is_dir():
        raise KeyFileError(f"authorized keys directory {directory} does not exist")
    if not any(directory.glob("*.key")):
        raise KeyFileError(
            f"{directory} holds no public keys (*.key): copy each robot's NAME.key there, or no robot can connect"
        )


def start_authenticator(context: zmq.Context[Any], authorized_keys: Path | None) -> Any:
    """Start the ZAP handler that vets CURVE clients of sockets in ``context``; stop it with ``.stop()``.

    Args:
        context: the server's context (the handler serves every socket in it).
        authorized_keys: directory of the public key files of the allowed clients; ``None`` allows any
            client key (encryption without authentication).
    """
    from zmq.auth import CURVE_ALLOW_ANY
    from zmq.auth.thread import ThreadAuthenticator

    location: str = CURVE_ALLOW_ANY
    if authorized_keys is not None:
        check_authorized_dir(authorized_keys)
        location = str(authorized_keys)
    authenticator = ThreadAuthenticator(context, log=logging.getLogger(f"{__name__}.auth"))
    authenticator.start()
    authenticator.configure_curve(domain="*", location=location)
    return authenticator


def _load(path: Path) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise KeyFileError(f"no key file at {path}; make one with `agent-runtime keys --dir DIR --name NAME`")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise KeyFileError(f"{path} is not a ZeroMQ key file: {exc}") from None
    if len(public) != 40 or (secret is not None and len(secret) != 40):
        raise KeyFileError(f"{path}: a CURVE key is 40 Z85 characters; this file's keys are not")
    return public, secret


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise KeyFileError("this libzmq was built without CURVE support; install pyzmq's bundled libzmq")
