"""The one error type the estimator raises for bad input."""


class EstimateError(Exception):
    """A user-facing problem (bad model argument, unknown dtype, ...).

    The CLI prints the message and exits 2 instead of showing a traceback,
    so the message must name the culprit.
    """
