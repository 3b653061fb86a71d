"""Typed errors for bad GenRM input: raised before anything reaches transformers."""

from vlgenrm.errors import ConfigError, PermanentError


class GenRMInputError(PermanentError):
    """An input the GenRM cannot score or train on; the message says which and why."""


class InvalidImageError(GenRMInputError):
    """The image bytes do not decode as an image."""


class ImageTooLargeError(GenRMInputError):
    """The image exceeds the configured byte or pixel limit."""


class EmptyResponseError(GenRMInputError):
    """A response (or question) is empty or only whitespace."""


class ContextTooLongError(GenRMInputError):
    """Prompt plus continuation exceed the model's configured context length."""


class UnsupportedModelError(ConfigError):
    """The checkpoint's model family is not one the adapter supports."""
