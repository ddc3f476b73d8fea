"""The old name of ``fastnn.auto.build`` (the background build): the same module object."""
import sys

from .auto import build

sys.modules[__name__] = build
