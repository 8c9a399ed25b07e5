"""The built-ins, registered here, explicitly: every dataset, model, optimizer and task (each registers itself on
import; adding one is one line here), then the users' own components."""
import sweeplab.data.images
import sweeplab.data.sequences
import sweeplab.data.text
import sweeplab.data.toy2d
import sweeplab.models.lm
import sweeplab.models.mlp_numpy
import sweeplab.models.optim
import sweeplab.models.sequence
import sweeplab.models.vision  # noqa: F401
from sweeplab.tasks import addition, image, lm, palindrome, plugins, toy2d  # noqa: F401
from sweeplab.tasks.resolve import capable, resolve, tasks_with

plugins.load_configured()  # users' own components ($SWEEPLAB_PLUGINS, entry points), after the built-ins

__all__ = ["capable", "resolve", "tasks_with"]
