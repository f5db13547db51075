"""The ``imt-cds`` command line: ``main`` builds the parser; one module per command group (evaluate, batch, rules and
explain, audit, serve), sharing helpers through ``common``. The top layer: nothing imports it.
"""
