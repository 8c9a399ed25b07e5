"""Every task registers itself (and its models and datasets) on import: adding a task is one line here."""
from sweeplab.tasks import lm  # noqa: F401
