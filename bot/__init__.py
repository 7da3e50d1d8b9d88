"""Echo-Vids front ends: the Discord bot and the ``echovids`` command line."""
