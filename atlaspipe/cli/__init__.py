"""The command line: the only place where argv is parsed."""
