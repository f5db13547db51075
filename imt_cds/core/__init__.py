"""The core: validated patient facts, the rulebook and its loader, the compiler, the engine (the one module that
imports durable-rules) and the explained assessment with its JSON document. Imports nothing else of imt_cds.
"""
