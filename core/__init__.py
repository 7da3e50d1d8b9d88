"""Echo-Vids engine: audio in, sound-alike YouTube seconds out.

Nothing in this package knows about Discord or terminals; front ends live in ``bot``.
"""

__version__ = "0.1.0"
