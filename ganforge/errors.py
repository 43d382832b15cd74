"""The error every config check raises, apart from ganforge.config so that config sections defined elsewhere
(e.g. ganforge.augment.config, which ganforge.config imports) can raise it without an import cycle."""


class ConfigError(ValueError):
    """A config problem, reported with the offending key path and what was expected."""
