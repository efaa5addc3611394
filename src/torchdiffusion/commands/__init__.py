"""One module per CLI command: HELP, EXAMPLES, add_arguments(parser), run(args) -> int."""
