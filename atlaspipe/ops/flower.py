"""Flower behind a guard: it must not listen beyond localhost without authentication.

Flower binds every interface unless told otherwise and has no authentication by default, so
``atlaspipe flower`` checks its settings before handing over to ``celery -A atlaspipe flower``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from atlaspipe.config import is_loopback
from atlaspipe.errors import ConfigError

log = logging.getLogger(__name__)


def flower_argv(arguments: Sequence[str]) -> list[str]:
    """Flower's options in the ``--name=value`` form its parser (tornado's) needs: ``--port 5555``
    would otherwise stop Flower with a traceback."""
    out: list[str] = []
    items = list(arguments)
    index = 0
    while index < len(items):
        item = items[index]
        following = items[index + 1] if index + 1 < len(items) else None
        if item.startswith("--") and "=" not in item and following is not None and not following.startswith("--"):
            out.append(f"{item}={following}")
            index += 2
            continue
        out.append(item)
        index += 1
    return out


def _option(arguments: Sequence[str], *names: str) -> str | None:
    value = None
    for index, item in enumerate(arguments):
        for name in names:
            if item == name and index + 1 < len(arguments):
                value = arguments[index + 1]
            elif item.startswith(name + "="):
                value = item.split("=", 1)[1]
    return value


def check_flower_auth(arguments: Sequence[str], environ: Mapping[str, str],
                      config_file: Path | None = None) -> None:
    """Raise ConfigError if Flower would listen beyond localhost without authentication.

    Flower binds every interface unless ``--address`` says otherwise. Its settings come from the
    command line, ``FLOWER_*`` variables and ``flowerconfig.py`` (or ``--conf``), read here in that
    order of precedence.
    """
    from_file: dict[str, Any] = {}
    conf = Path(_option(arguments, "--conf") or environ.get("FLOWER_CONF") or "flowerconfig.py")
    conf = config_file or conf
    if conf.is_file():
        import runpy

        log.debug("Flower settings from %s", conf)
        from_file = runpy.run_path(str(conf))
    address = (_option(arguments, "--address") or environ.get("FLOWER_ADDRESS")
               or str(from_file.get("address") or ""))
    unix_socket = _option(arguments, "--unix-socket", "--unix_socket") or environ.get("FLOWER_UNIX_SOCKET")
    if unix_socket or is_loopback(address):
        return
    basic = (_option(arguments, "--basic-auth", "--basic_auth") or environ.get("FLOWER_BASIC_AUTH")
             or from_file.get("basic_auth"))
    oauth = _option(arguments, "--auth") or environ.get("FLOWER_AUTH") or from_file.get("auth")
    if oauth:
        return
    entries = basic if isinstance(basic, list | tuple) else str(basic or "").split(",")
    credentials = [e for e in (str(x).strip() for x in entries) if e]
    where = address or "all interfaces"
    if not credentials:
        raise ConfigError(f"Flower would listen on {where} without authentication: set FLOWER_BASIC_AUTH="
                          "user:password (or --basic-auth), or bind it to 127.0.0.1 with --address=127.0.0.1")
    for entry in credentials:
        user, _, password = entry.partition(":")
        if not user or not password:
            raise ConfigError(f"FLOWER_BASIC_AUTH entry '{user}:…' needs the form user:password with a "
                              "non-empty password")
