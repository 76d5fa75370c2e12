"""The command-line interface (typer): a thin layer over the services."""
