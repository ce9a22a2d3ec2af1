"""Configuration: application.properties or .yml, the environment and -D arguments, in one precedence."""

from meshkit.config._config import (
    AppConfig,
    ConfigError,
    env_name,
    is_secret_key,
    masked,
    parse_define_arguments,
    set_system_properties,
    system_properties,
)

__all__ = [
    "AppConfig",
    "ConfigError",
    "env_name",
    "is_secret_key",
    "masked",
    "parse_define_arguments",
    "set_system_properties",
    "system_properties",
]
