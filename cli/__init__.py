"""The `pol` command: one module per verb, each a thin shell over `engine`."""
