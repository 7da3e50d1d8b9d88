"""One module per ``echovids`` subcommand, each with ``run(args, settings) -> int``."""
