"""The user-error classes every layer raises: the CLI prints any `UserError` as one line and exits 2.

Kept apart from `config` so that the lowest modules (`io`, `data`) can raise them without importing
the config layer (and, through it, the GGUF converter).
"""


class UserError(ValueError):
    """A problem with what the user gave (a config, an input, a checkpoint): one line naming it; the CLI exits 2."""


class ConfigError(UserError):
    """A configuration problem, already phrased as `source: field: reason` lines."""


class InputError(UserError):
    """An input that cannot be used or an output that would destroy something; one line."""
