"""The old name of ``fastnn.auto.choice`` (``kernel="auto"``'s choice of variant): the same
module object, so every name, and every test's monkeypatch, works through either."""
import sys

from .auto import choice

sys.modules[__name__] = choice
