"""The ``openset-perception`` command: thin adapters from argparse to the core modules."""
