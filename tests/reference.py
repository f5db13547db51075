"""Independent, hand-written reference evaluator of the IMT rule catalogue v0.1.

What it is for: the oracle of the differential test against the real rules engine, and the plain-Python
baseline of the benchmark (SPEC §6).  It re-reads ``clinical/RULES.md`` literally, rule by rule, as
straight-line ``if`` statements, so a reviewer can check it line by line against the catalogue.

What it must never do: import ``imt_cds`` or ``durable`` (it would stop being independent), validate input
(it takes a complete, canonical, already-valid patient dict as in SPEC §2, every key present, defaults filled),
or allocate anything per call beyond its result (no regexes, json, or helper objects in the hot path).

Reading conventions (RULES.md "How to read a condition"):
- A positive test needs the known value: ``x == "positive"``, ``x is True``, ``x is False``.  ``unknown`` and
  ``None`` never satisfy it.
- A negated test is plain logical negation of the positive test, so it *is* satisfied by unknown / None.
- The never-null booleans (``surgery_done``, ``recurrence``, ``progressed_on_*``, ``rna_fusion_panel_done``,
  ``epithelioid_morphology``) are read by truth value.
- A numeric comparison is never satisfied by ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_PARAMETERS", "ReferenceResult", "evaluate_reference"]

# RULES.md §1.
DEFAULT_PARAMETERS = {
    "size_risk_threshold_cm": 3.9,
    "evidence_age_limit_years": 39,
    "crizotinib_min_age_years": 1,
    "selpercatinib_min_age_years": 2,
    "trk_infant_check_age_years": 1,
}

_ADVANCED_RESECTABILITY = frozenset({"unresectable", "resectable_only_with_mutilation"})
_C2_IHC_PATTERNS = frozenset({"cytoplasmic", "nuclear_membrane_or_perinuclear"})
_RECORDED_MARGINS = frozenset({"R0", "R1", "R2"})
_POSITIVE_MARGINS = frozenset({"R1", "R2"})
_NO_ROUTINE_ADJUVANT_MARGINS = frozenset({"R0", "R1"})


@dataclass(frozen=True)
class ReferenceResult:
    findings: frozenset[str]  # every emitted finding code (REC_*, REQUEST_*, RISK_*, FLAG_*), after suppression
    derived: frozenset[str]  # derived facts that hold; contradiction as "CONTRADICTION:C1".."CONTRADICTION:C4"
    suppressed: frozenset[str]  # finding codes of R23–R31 and R38 whose condition held but CONTRADICTION suppressed
    fired: frozenset[str]  # rule ids (R..) whose condition held, before suppression; never D/C ids


def _ihc_only(methods) -> bool:
    """`IHC-only`: the recorded methods are exactly the set {IHC}; an empty list is *not* IHC-only."""
    n = len(methods)
    if n == 1:
        return "IHC" in methods
    if n == 0 or "IHC" not in methods:
        return False
    # Canonical input has distinct methods, so this is reached only by a non-canonical list with repeats
    # (SPEC §2: methods is a set, repeats do not matter).
    for m in methods:
        if m != "IHC":
            return False
    return True


def evaluate_reference(facts: dict, params: dict | None = None) -> ReferenceResult:
    """Evaluate the whole v0.1 catalogue (RULES.md §2–§4) on one canonical patient dict."""
    # ---------------------------------------------------------------- parameters (§1)
    if params:
        p = DEFAULT_PARAMETERS | params
    else:
        p = DEFAULT_PARAMETERS
    size_threshold = p["size_risk_threshold_cm"]
    evidence_age_limit = p["evidence_age_limit_years"]
    crizotinib_min_age = p["crizotinib_min_age_years"]
    selpercatinib_min_age = p["selpercatinib_min_age_years"]
    trk_infant_age = p["trk_infant_check_age_years"]

    # ---------------------------------------------------------------- input facts (SPEC §2)
    age = facts["age_years"]
    tumor = facts["tumor"]
    size = tumor["size_cm"]
    resectability = tumor["resectability"]
    distant = tumor["distant_disease"]
    epithelioid = tumor["epithelioid_morphology"]
    respiratory = facts["symptoms"]["respiratory"]
    mol = facts["molecular"]
    alk = mol["alk"]
    alk_status = alk["status"]
    alk_ihc_pattern = alk["ihc_pattern"]
    alk_partner = alk["fusion_partner"]
    panel_done = mol["rna_fusion_panel_done"]
    hist = facts["history"]
    surgery = hist["surgery_done"]
    margin = hist["margin_status"]
    recurrence = hist["recurrence"]
    progressed_alk = hist["progressed_on_alk_inhibitor"]
    progressed_systemic = hist["progressed_on_prior_systemic"]

    alk_pos = alk_status == "positive"
    alk_neg = alk_status == "negative"
    ros1_pos = mol["ros1"]["status"] == "positive"
    ntrk_pos = mol["ntrk"]["status"] == "positive"
    ret_pos = mol["ret"]["status"] == "positive"
    pdgfrb_pos = mol["pdgfrb"]["status"] == "positive"
    distant_true = distant is True
    distant_false = distant is False
    # IHC-only is computed only when it can matter (ALK positive or negative), to keep the hot path short.
    alk_ihc_only = (alk_pos or alk_neg) and _ihc_only(alk["methods"])
    # "RANBP2" compares case-insensitively and exactly. (No non-ASCII character upper-/lower-/case-folds into
    # any letter of RANBP2, so str.upper agrees with every other case-insensitive comparison here.)
    partner_ranbp2 = alk_partner is not None and len(alk_partner) == 6 and alk_partner.upper() == "RANBP2"

    findings = []  # unsuppressible findings: R01–R22, R37 and the targeted rules R32a–R36b
    group_t = []  # non-targeted group-T findings R23–R31, R38 (suppressed by CONTRADICTION, §4)
    derived = []
    fired = []

    # ---------------------------------------------------------------- derived facts (§2)
    # D01 AGE_KNOWN: age_years is not null (0 is a known age).
    age_known = age is not None
    if age_known:
        derived.append("AGE_KNOWN")

    # D02 ADVANCED_DISEASE: resectability ∈ {unresectable, resectable_only_with_mutilation}, or distant disease
    # = true, or recurrence, or progressed on an ALK inhibitor, or progressed on prior systemic therapy.
    # An R2 margin alone does not make disease advanced (§6.3).
    advanced = (
        resectability in _ADVANCED_RESECTABILITY
        or distant_true
        or recurrence
        or progressed_alk
        or progressed_systemic
    )
    if advanced:
        derived.append("ADVANCED_DISEASE")

    # D03 MULTIPLE_KINASE_FUSIONS: at least two of ALK+, ROS1+, NTRK+, RET+, PDGFRB+.
    multiple_fusions = (alk_pos + ros1_pos + ntrk_pos + ret_pos + pdgfrb_pos) >= 2
    if multiple_fusions:
        derived.append("MULTIPLE_KINASE_FUSIONS")

    # D04 CONTRADICTION, one derived fact per reason that holds.
    # C1: ALK negative and ALK fusion partner recorded.
    c1 = alk_neg and alk_partner is not None
    # C2: ALK negative and ALK IHC pattern ∈ {cytoplasmic, nuclear_membrane_or_perinuclear}.
    c2 = alk_neg and alk_ihc_pattern in _C2_IHC_PATTERNS
    # C3: margin status ∈ {R0, R1, R2} and not surgery_done.
    c3 = (not surgery) and margin in _RECORDED_MARGINS
    # C4: progressed on an ALK inhibitor and neither ALK+ nor ROS1+ (so ALK unknown counts, §6.7).
    c4 = progressed_alk and not (alk_pos or ros1_pos)
    if c1:
        derived.append("CONTRADICTION:C1")
    if c2:
        derived.append("CONTRADICTION:C2")
    if c3:
        derived.append("CONTRADICTION:C3")
    if c4:
        derived.append("CONTRADICTION:C4")
    contradiction = c1 or c2 or c3 or c4

    # D05 DATA_BLOCK: CONTRADICTION or MULTIPLE_KINASE_FUSIONS.
    data_block = contradiction or multiple_fusions
    if data_block:
        derived.append("DATA_BLOCK")

    # D06 ALK_INHIBITOR_ELIGIBLE: ALK+ and ADVANCED_DISEASE and not progressed on an ALK inhibitor and not
    # DATA_BLOCK and AGE_KNOWN.
    alk_eligible = alk_pos and advanced and not progressed_alk and not data_block and age_known
    if alk_eligible:
        derived.append("ALK_INHIBITOR_ELIGIBLE")

    # D07 KINASE_FUSION_NEGATIVE: ALK negative and RNA fusion panel done and none of ROS1+, NTRK+, RET+.
    # PDGFRB+ may hold; ROS1/NTRK/RET still `unknown` count as not positive.
    fusion_negative = alk_neg and panel_done and not (ros1_pos or ntrk_pos or ret_pos)
    if fusion_negative:
        derived.append("KINASE_FUSION_NEGATIVE")

    # D08 EIMS_SUSPECT: epithelioid morphology, or ALK IHC pattern = nuclear_membrane_or_perinuclear, or ALK
    # fusion partner equals RANBP2 (case-insensitive).
    # AMBIGUITY: D08 does not mention the ALK status, so a RANBP2 partner or a nuclear-membrane pattern makes
    # EIMS_SUSPECT whatever the ALK status (including negative, where C1/C2 also hold). Implemented literally.
    eims = epithelioid or alk_ihc_pattern == "nuclear_membrane_or_perinuclear" or partner_ranbp2
    if eims:
        derived.append("EIMS_SUSPECT")

    # ---------------------------------------------------------------- 3.1 always
    # R01 always -> REC_MULTIDISCIPLINARY_REVIEW.
    fired.append("R01")
    findings.append("REC_MULTIDISCIPLINARY_REVIEW")

    # ---------------------------------------------------------------- 3.2 data requests (R02–R13)
    # R02 age null.
    if not age_known:
        fired.append("R02")
        findings.append("REQUEST_AGE")
    # R03 ALK status unknown.
    if alk_status == "unknown":
        fired.append("R03")
        findings.append("REQUEST_ALK_TESTING")
    # R04 ALK not positive, panel not done, none of ROS1+, NTRK+, RET+, PDGFRB+.
    if not alk_pos and not panel_done and not (ros1_pos or ntrk_pos or ret_pos or pdgfrb_pos):
        fired.append("R04")
        findings.append("REQUEST_RNA_FUSION_PANEL")
    # R05 size null.
    if size is None:
        fired.append("R05")
        findings.append("REQUEST_TUMOR_SIZE")
    # R06 respiratory symptoms null.
    if respiratory is None:
        fired.append("R06")
        findings.append("REQUEST_RESPIRATORY_SYMPTOM_STATUS")
    # R07 distant disease null.
    if distant is None:
        fired.append("R07")
        findings.append("REQUEST_DISTANT_STAGING")
    # R08 resectability unknown and (not surgery_done or recurrence).
    if resectability == "unknown" and (not surgery or recurrence):
        fired.append("R08")
        findings.append("REQUEST_RESECTABILITY_ASSESSMENT")
    # R09 surgery_done and margin null or unknown.
    if surgery and (margin is None or margin == "unknown"):
        fired.append("R09")
        findings.append("REQUEST_MARGIN_STATUS")
    # R10 ALK+ by IHC-only and ADVANCED_DISEASE (never gated or suppressed).
    if alk_pos and alk_ihc_only and advanced:
        fired.append("R10")
        findings.append("REQUEST_ALK_FUSION_CONFIRMATION")
    # R11 EIMS_SUSPECT.
    if eims:
        fired.append("R11")
        findings.append("REQUEST_EXPERT_PATHOLOGY_REVIEW")
    # R12 CONTRADICTION (any reason) -> two findings.
    if contradiction:
        fired.append("R12")
        findings.append("REQUEST_DATA_RECONCILIATION")
        findings.append("FLAG_CONTRADICTORY_INPUT")
    # R13 MULTIPLE_KINASE_FUSIONS -> two findings.
    if multiple_fusions:
        fired.append("R13")
        findings.append("REQUEST_MOLECULAR_RECONCILIATION")
        findings.append("FLAG_MULTIPLE_KINASE_FUSIONS_VERIFY")

    # ---------------------------------------------------------------- 3.3 risk and information flags
    # R14 age strictly above evidence_age_limit_years.
    if age_known and age > evidence_age_limit:
        fired.append("R14")
        findings.append("FLAG_AGE_OUTSIDE_EVIDENCE_RANGE")
    # R15 respiratory symptoms = true.
    if respiratory is True:
        fired.append("R15")
        findings.append("RISK_RESPIRATORY_SYMPTOMS")
    # R16 size strictly above size_risk_threshold_cm.
    if size is not None and size > size_threshold:
        fired.append("R16")
        findings.append("RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN")
    # R17 distant disease = true.
    if distant_true:
        fired.append("R17")
        findings.append("RISK_DISTANT_DISEASE")
    # R18 recurrence.
    if recurrence:
        fired.append("R18")
        findings.append("RISK_RECURRENT_DISEASE")
    # R19a EIMS_SUSPECT and ALK not negative (ALK unknown counts).
    if eims and not alk_neg:
        fired.append("R19a")
        findings.append("RISK_EIMS_AGGRESSIVE_VARIANT")
    # R19b epithelioid morphology and ALK negative.
    if epithelioid and alk_neg:
        fired.append("R19b")
        findings.append("FLAG_EIMS_FEATURES_ALK_NEGATIVE_REVIEW")
    # R20 ALK+ and fusion partner RANBP2.
    # AMBIGUITY: "fusion partner" is not qualified; read as molecular.alk.fusion_partner (the rule is about
    # ALK+ and RANBP2-ALK), not the partner of any other gene.
    if alk_pos and partner_ranbp2:
        fired.append("R20")
        findings.append("RISK_RANBP2_ALK_TKI_RELAPSE")
    # R21a surgery_done and margin ∈ {R1, R2}.
    if surgery and margin in _POSITIVE_MARGINS:
        fired.append("R21a")
        findings.append("RISK_MARGIN_POSITIVE_CONFLICTING_EVIDENCE")
    # R21b surgery_done and margin R2.
    if surgery and margin == "R2":
        fired.append("R21b")
        findings.append("RISK_GROSS_RESIDUAL_DISEASE")
    # R22 ALK negative by IHC-only.
    if alk_neg and alk_ihc_only:
        fired.append("R22")
        findings.append("FLAG_ALK_IHC_ONLY_NEGATIVE")
    # R37 PDGFRB+ and ADVANCED_DISEASE (a §3.3 flag: never suppressed, not gated by DATA_BLOCK).
    if pdgfrb_pos and advanced:
        fired.append("R37")
        findings.append("FLAG_NO_APPROVED_TARGETED_AGENT")

    # ---------------------------------------------------------------- 3.4 non-targeted group T (R23–R31, R38)
    # R23 not surgery_done, no recurrence, resectable, distant disease = false.
    if not surgery and not recurrence and resectability == "resectable" and distant_false:
        fired.append("R23")
        group_t.append("REC_UPFRONT_SURGICAL_RESECTION")
    # R24 not surgery_done, resectable, distant disease = true (with or without recurrence, §6.8).
    if not surgery and resectability == "resectable" and distant_true:
        fired.append("R24")
        group_t.append("REC_MDT_PRIMARY_RESECTION_WITH_DISTANT_DISEASE")
    # R25 (not surgery_done or recurrence) and resectable_only_with_mutilation.
    if (not surgery or recurrence) and resectability == "resectable_only_with_mutilation":
        fired.append("R25")
        group_t.append("REC_AVOID_MUTILATING_SURGERY")
    # R26 recurrence, resectable, distant disease = false.
    if recurrence and resectability == "resectable" and distant_false:
        fired.append("R26")
        group_t.append("REC_RESECT_LOCAL_RECURRENCE_IF_FEASIBLE")
    # R27 surgery_done, margin ∈ {R0, R1}, distant disease = false, no recurrence.
    if surgery and margin in _NO_ROUTINE_ADJUVANT_MARGINS and distant_false and not recurrence:
        fired.append("R27")
        group_t.append("REC_NO_ROUTINE_ADJUVANT_THERAPY")
    # R28 surgery_done, margin R1, distant disease = false, no recurrence.
    if surgery and margin == "R1" and distant_false and not recurrence:
        fired.append("R28")
        group_t.append("REC_OBSERVE_R1_NO_ROUTINE_RERESECTION")
    # R29 surgery_done, margin R2, no recurrence (no condition on distant disease).
    if surgery and margin == "R2" and not recurrence:
        fired.append("R29")
        group_t.append("REC_MDT_GROSS_RESIDUAL_OBSERVE_OR_TREAT")
    # R30 surgery_done, no recurrence, distant disease = false (no condition on the margin, §6.8).
    if surgery and not recurrence and distant_false:
        fired.append("R30")
        group_t.append("REC_POSTTREATMENT_SURVEILLANCE")
    # R31 ADVANCED_DISEASE.
    if advanced:
        fired.append("R31")
        group_t.append("REC_CLINICAL_TRIAL_CONSIDER")
    # R38 ADVANCED_DISEASE and KINASE_FUSION_NEGATIVE.
    if advanced and fusion_negative:
        fired.append("R38")
        group_t.append("REC_NONTARGETED_SYSTEMIC_OPTIONS")

    # ---------------------------------------------------------------- 3.4 targeted (R32a–R36b)
    # All targeted rules also require AGE_KNOWN and not DATA_BLOCK; their companion flags and requests exist
    # only when the rule fires.
    if age_known and not data_block:
        # R32a ALK_INHIBITOR_ELIGIBLE and age >= crizotinib_min_age_years.
        if alk_eligible and age >= crizotinib_min_age:
            fired.append("R32a")
            findings.append("REC_CRIZOTINIB_ALK")
        # R32b ALK_INHIBITOR_ELIGIBLE and age < crizotinib_min_age_years.
        if alk_eligible and age < crizotinib_min_age:
            fired.append("R32b")
            findings.append("REC_ALK_INHIBITOR_OFF_LABEL_AGE_REVIEW")
            findings.append("FLAG_OFF_LABEL_AGE")
        # R33 ALK+ and progressed on an ALK inhibitor.
        if alk_pos and progressed_alk:
            fired.append("R33")
            findings.append("REC_NEXT_GEN_ALK_INHIBITOR_CONSIDER")
            findings.append("FLAG_OFF_LABEL_INDICATION")
            findings.append("REQUEST_REPEAT_MOLECULAR_PROFILING")
        # R34 ROS1+ and ADVANCED_DISEASE.
        if ros1_pos and advanced:
            fired.append("R34")
            findings.append("REC_ROS1_INHIBITOR_CONSIDER")
            findings.append("FLAG_OFF_LABEL_INDICATION")
        # R35 NTRK+ and ADVANCED_DISEASE; infant labelling flag when age < trk_infant_check_age_years.
        if ntrk_pos and advanced:
            fired.append("R35")
            findings.append("REC_TRK_INHIBITOR")
            if age < trk_infant_age:
                findings.append("FLAG_VERIFY_INFANT_LABELING")
        # R36a RET+ and ADVANCED_DISEASE and age >= selpercatinib_min_age_years.
        if ret_pos and advanced and age >= selpercatinib_min_age:
            fired.append("R36a")
            findings.append("REC_SELPERCATINIB_RET")
        # R36b RET+ and ADVANCED_DISEASE and age < selpercatinib_min_age_years.
        if ret_pos and advanced and age < selpercatinib_min_age:
            fired.append("R36b")
            findings.append("REC_RET_INHIBITOR_OFF_LABEL_AGE_REVIEW")
            findings.append("FLAG_OFF_LABEL_AGE")

    # ---------------------------------------------------------------- §4 suppression
    # CONTRADICTION (any reason) suppresses the findings of R23–R31 and R38; MULTIPLE_KINASE_FUSIONS alone
    # suppresses nothing here (it only gates the targeted rules through DATA_BLOCK).
    # A code also produced by an unsuppressed rule stays in `findings` (it is in `findings` already).
    # AMBIGUITY: such a code is then both emitted and listed in `suppressed` (the suppressed rule's instance
    # of it was suppressed). No such overlap exists in v0.1: group-T codes are produced by no other rule.
    if contradiction:
        suppressed = frozenset(group_t)
    else:
        findings.extend(group_t)
        suppressed = frozenset()

    return ReferenceResult(
        findings=frozenset(findings),
        derived=frozenset(derived),
        suppressed=suppressed,
        fired=frozenset(fired),
    )
