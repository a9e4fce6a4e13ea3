"""The decoder's single error type."""


class StreamError(ValueError):
    """A stream violates the spec (bitstream-v1.md section 9); the message is one line."""
