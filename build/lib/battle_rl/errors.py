"""The errors a user can cause; the entry points print their message as one line."""


class ConfigError(ValueError):
    """A bad configuration value or command; its message is the line shown to the user."""


class PolicyLoadError(ValueError):
    """A checkpoint or policy file that cannot be used, with the reason in plain words."""
