"""The one base class for errors a user can fix; stages print these as one line and exit non-zero."""


class TinyGptError(Exception):
    """A problem with the input (params, files, network) whose message says what to do."""


class ParamsError(TinyGptError, ValueError):
    """A problem in params.yaml, with the key at fault and what is allowed."""
