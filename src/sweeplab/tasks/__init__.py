"""Every task registers itself (and its models and datasets) on import: adding a task is one line here."""
from sweeplab.tasks import lm  # noqa: F401
from sweeplab.tasks import palindrome  # noqa: F401
from sweeplab.tasks import addition  # noqa: F401
from sweeplab.tasks import toy2d  # noqa: F401
from sweeplab.tasks import image  # noqa: F401
