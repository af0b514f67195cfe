"""The ``vidstyle`` command (``main``): one subcommand a module, each loading only what it runs."""
