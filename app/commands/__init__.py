"""One module per ``fvc`` command; each exposes ``register(subparsers)``."""
