"""iotad worker package: everything `iotad run` needs, and nothing heavy.

Importing this package must not import TensorFlow (tests check it).
"""

from __future__ import annotations

__version__ = "0.1.0"
