"""Renderers of an assessment: the consult note, the HTML rationale report, FHIR R4 output, CDS Hooks cards and the
project's own FHIR code systems. Above the core only.
"""
