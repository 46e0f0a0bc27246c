"""The command line: thin Typer stages over the `pipeline` library."""
