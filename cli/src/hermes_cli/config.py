"""Where the ``hermes`` command finds the gateway and its token: one typed settings object.

Precedence (highest first): the ``--url`` / ``--token`` options, the environment (``HERMES_URL``,
``HERMES_TOKEN``), then the TOML file ``$HERMES_HOME/cli.toml`` (``HERMES_HOME`` defaults to ``~/.hermes``)
with top-level keys ``url`` and ``token``::

    url = "http://127.0.0.1:5000"
    token = "..."

Without any URL the gateway is ``http://127.0.0.1:${HERMES_WEB_PORT:-5000}``. The token is a
:class:`~pydantic.SecretStr`: its ``repr`` and ``str`` are masked, and no error message here quotes it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_WEB_PORT = "5000"


class ConfigError(Exception):
    """``cli.toml`` is not valid TOML, or a setting has the wrong type. The message names the file and the
    setting, never its value (it may be the token)."""


def hermes_home() -> Path:
    """``$HERMES_HOME``, else ``~/.hermes``."""
    return Path(os.environ.get("HERMES_HOME") or Path.home() / ".hermes")


def cli_toml_path() -> Path:
    """``$HERMES_HOME/cli.toml``: the CLI's config file (it need not exist)."""
    return hermes_home() / "cli.toml"


class CliSettings(BaseSettings):
    """``url``: the gateway's base URL (None: :func:`default_url`'s fallback); ``token``: the API token sent as
    ``Authorization: Bearer <token>`` (None: no header, for a gateway with auth off)."""

    model_config = SettingsConfigDict(env_prefix="HERMES_", env_ignore_empty=True, extra="ignore")

    url: str | None = None
    token: SecretStr | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's path depends on HERMES_HOME at call time, so it is not a class-level model_config entry.
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=cli_toml_path())

    def bearer(self) -> str | None:
        """The token's text, or None. Only for the Authorization header; never print it."""
        return self.token.get_secret_value() if self.token and self.token.get_secret_value().strip() else None


def load_settings(url: str | None = None, token: str | None = None) -> CliSettings:
    """The settings with the command-line options ``url`` / ``token`` on top (None: not given).
    Raises :class:`ConfigError`."""
    options = {key: value for key, value in (("url", url), ("token", token)) if value}
    try:
        return CliSettings(**options)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{cli_toml_path()} is not valid TOML: {exc}") from None
    except ValidationError as exc:
        fields = ", ".join(".".join(str(part) for part in error["loc"]) for error in exc.errors())
        raise ConfigError(
            f"invalid setting(s) {fields} (from --url/--token, HERMES_URL/HERMES_TOKEN or "
            f"{cli_toml_path()}): url and token must be strings"
        ) from None


def default_url() -> str:
    """``http://127.0.0.1:${HERMES_WEB_PORT:-5000}``: the gateway of ``hermes up`` on this machine."""
    return f"http://127.0.0.1:{os.environ.get('HERMES_WEB_PORT') or DEFAULT_WEB_PORT}"
