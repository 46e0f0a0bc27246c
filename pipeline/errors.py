"""The one user-facing error type.

Anything a user can fix (a missing path, a corrupt source, an unknown option value) is raised
as a `PipelineError` whose message is one line saying what is wrong and what to do. The command
line prints that line and exits with status 1; everything else is a bug and keeps its traceback.
"""


class PipelineError(Exception):
    """A problem the user can fix; its message is shown as is, on one line."""


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, shortened (MLflow's and Ray's can run to pages)."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
