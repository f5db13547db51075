"""The rule author's tools: why / why-not, rule examples, coverage, exhaustive verification and rulebook diffs
(the last two with z3). Above the core only.
"""
