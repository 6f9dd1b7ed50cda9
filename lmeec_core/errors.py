"""Typed errors: each says what was wrong and what was expected.

The ROS layer turns them into service answers and diagnostics; a caller can catch `LmeecError`
to handle every refusal of this package while letting genuine bugs propagate.
"""


class LmeecError(Exception):
    """Base class of every refusal raised by lmeec_core."""


class InputError(LmeecError, ValueError):
    """An image, mask, box, points or stamp that cannot be used as given."""


class StateError(LmeecError, RuntimeError):
    """A call that is not valid in the current state (e.g. step() before set_target())."""


class CheckpointError(LmeecError, ValueError):
    """A checkpoint file that is missing, truncated, of an unknown format or for another model."""


class ConfigError(LmeecError, ValueError):
    """A configuration value outside what the model or tracker supports."""


class UnknownTargetError(InputError):
    """A target id that the tracker does not hold (never issued, or removed)."""


class TargetLimitError(StateError):
    """A new target while the tracker already holds its maximum number of targets."""


class TargetOverlapError(InputError):
    """A prompt that marks (mostly) the same pixels as another target's current mask in that view."""
