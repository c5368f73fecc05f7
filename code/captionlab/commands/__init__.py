"""The CLI's commands, each module holding its commands' options beside the code they run
(``add_commands(command, positive_int)``, as ``serve/cli.py`` and ``vlm/cli.py`` do); ``cli.py``
assembles the parser and turns expected errors into one line."""
