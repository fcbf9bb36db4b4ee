"""The README's worked example of 诉前调解, run against a `fengqiao dev` suite from Python
(grpcio, grpc-requests, server reflection only): one pre-filing case from intake to a filed
agreement and an application for judicial confirmation, and one from intake to registration
after the mediation failed.

Usage: court_example.py ADDR CLERK_TOKEN JUDGE_TOKEN COMMITTEE_TOKEN
Prints one line per step; exits non-zero at the first failure.
"""

import sys
import time
import uuid

from grpc_requests import Client

addr, t_clerk, t_judge, t_head = sys.argv[1:5]
c = Client.get_by_endpoint(addr)
md = lambda t: [("authorization", "Bearer " + t)]
clerk, judge, head = md(t_clerk), md(t_judge), md(t_head)
CD = "fengqiao.courtdiversion.v1.CourtDiversionService"
MED = "fengqiao.mediation.v1.MediationService"
TR = "fengqiao.router.v1.TransferService"
COMMITTEE = "xigang-mediation-committee"
rid = lambda: str(uuid.uuid4())
doc = lambda n: {"display_name": n, "uri": "court://docs/" + n, "media_type": "application/pdf",
                 "sha256": "ab" * 32}


def step(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f" {detail}"))
    if not ok:
        sys.exit(1)


def until(name, state):
    for _ in range(200):
        case = c.request(CD, "GetCase", {"name": name}, metadata=clerk)["pre_filing_case"]
        if case["state"] == state:
            return case
        time.sleep(0.1)
    step(f"case becomes {state}", False, case["state"])


def intake(number):
    return c.request(CD, "CreateCase", {"request_id": rid(), "pre_filing_case": {
        "pre_filing_number": f"(2026)辽0203诉前调{number}号",
        "plaintiffs": [{"party_id": "p1", "role": "PARTY_ROLE_APPLICANT", "name": "王某"}],
        "defendants": [{"party_id": "p2", "role": "PARTY_ROLE_RESPONDENT", "name": "赵某"}],
        "claims": [{"description": "判令被告赔偿装修损失",
                    "amount": {"currency_code": "CNY", "units": 5000}}],
        "category": "DISPUTE_CATEGORY_NEIGHBOURHOOD", "summary": "楼上漏水致楼下装修受损",
        "evidence": [doc("起诉状")], "region_code": "210203"},
        "consents": [{"party_id": p, "decision": "CONSENT_DECISION_CONSENTED",
                      "method": "CONSENT_METHOD_WRITTEN"} for p in ("p1", "p2")]},
        metadata=clerk)["pre_filing_case"]


def offered(case):
    for _ in range(200):
        cases = c.request(MED, "ListCases", {"case_id": case["case_id"]},
                          metadata=head).get("mediation_cases", [])
        if cases:
            return cases[0]
        time.sleep(0.1)
    step("the offer reaches the committee", False)


def in_mediation(case):
    m = offered(case)
    m = c.request(MED, "AcceptCase", {"name": m["name"], "request_id": rid()},
                  metadata=head)["mediation_case"]
    until(case["name"], "PRE_FILING_CASE_STATE_CONTACTING")
    c.request(TR, "CompleteClock", {"name": m["transfer"], "clock": "contact_parties",
                                    "request_id": rid()}, metadata=head)
    until(case["name"], "PRE_FILING_CASE_STATE_IN_MEDIATION")
    for p in ("p1", "p2"):
        m = c.request(MED, "RecordConsent", {"name": m["name"], "party_id": p,
                      "decision": "CONSENT_DECISION_CONSENTED", "method": "CONSENT_METHOD_WRITTEN",
                      "request_id": rid()}, metadata=head)["mediation_case"]
    m = c.request(MED, "AssignMediator", {"name": m["name"], "request_id": rid(),
                  "mediator": f"organizations/{COMMITTEE}/mediators/director"},
                  metadata=head)["mediation_case"]
    return m


# The committee's own roster on the mediation service is seeded by `fengqiao dev`
# (organisation = agency id, mediators = its actors with the role `mediator`).
orgs = c.request(MED, "ListMediators", {"parent": f"organizations/{COMMITTEE}"},
                 metadata=head).get("mediators", [])
step("fengqiao dev seeded the committee's mediators",
     any(m["name"] == f"organizations/{COMMITTEE}/mediators/director" for m in orgs), orgs)

roster = c.request(CD, "ListInvitedOrganizations", {}, metadata=clerk).get("invited_organizations", [])
step("the court's roster lists the committee",
     any(o["name"] == f"invitedOrganizations/{COMMITTEE}" for o in roster), roster)

# 1. Intake to agreement.
case = intake(1)
step("intake with consent: AWAITING_JOINT_CHOICE", case["state"] == "PRE_FILING_CASE_STATE_AWAITING_JOINT_CHOICE", case["state"])
case = c.request(CD, "ChooseMediator", {"name": case["name"], "request_id": rid(),
    "mediator": f"invitedOrganizations/{COMMITTEE}/mediators/director",
    "chosen_by_party_ids": ["p1", "p2"], "evidence": doc("选定调解员确认书")}, metadata=clerk)["pre_filing_case"]
step("joint choice: DELEGATED", case["state"] == "PRE_FILING_CASE_STATE_DELEGATED", case["state"])
m = in_mediation(case)
# Answers are masked; the agreement records each party's identity (人民调解法 Art 29): the
# mediator reads the parties in full (x-fengqiao-personal-info: full, access-logged).
full = c.request(MED, "GetCase", {"name": m["name"]},
                 metadata=head + [("x-fengqiao-personal-info", "full")])["mediation_case"]
m = c.request(MED, "DraftAgreement", {"name": m["name"], "request_id": rid(), "agreement": {
    "parties": full["parties"], "facts_and_responsibilities": "赵某家中水管破裂致王某装修受损，赵某承担责任",
    "terms": [{"description": "赵某赔偿王某装修损失四千元", "obligor_party_ids": ["p2"], "obligee_party_ids": ["p1"]}],
    "performance_manner": "一次性支付", "performance_deadline": "2030-03-17T00:00:00Z"}},
    metadata=head)["mediation_case"]
for kind, party, method in (("SIGNER_KIND_PARTY", "p1", "SIGNATURE_METHOD_HANDWRITTEN"),
                            ("SIGNER_KIND_PARTY", "p2", "SIGNATURE_METHOD_HANDWRITTEN"),
                            ("SIGNER_KIND_MEDIATOR", "", "SIGNATURE_METHOD_HANDWRITTEN"),
                            ("SIGNER_KIND_COMMITTEE_SEAL", "", "SIGNATURE_METHOD_SEAL")):
    m = c.request(MED, "SignAgreement", {"name": m["name"], "request_id": rid(), "signature": {
        "signer_kind": kind, "party_id": party, "signer_name": "签署人", "method": method}},
        metadata=head)["mediation_case"]
c.request(MED, "EndMediation", {"name": m["name"], "reason": "END_REASON_AGREEMENT", "request_id": rid()},
          metadata=head)
case = until(case["name"], "PRE_FILING_CASE_STATE_AGREEMENT_FILED")
step("agreement filed, next steps offered",
     len(case["agreement_filing"]["offered_next_steps"]) == 3, case.get("agreement_filing"))
case = c.request(CD, "DecideNextStep", {"name": case["name"], "request_id": rid(),
                 "next_step": "NEXT_STEP_JUDICIAL_CONFIRMATION"}, metadata=clerk)["pre_filing_case"]
step("judicial confirmation applied", case["state"] == "PRE_FILING_CASE_STATE_CONFIRMATION_APPLIED", case["state"])

# 2. Intake to registration after failure.
case = intake(2)
case = c.request(CD, "DesignateMediator", {"name": case["name"], "request_id": rid(),
    "organization": f"invitedOrganizations/{COMMITTEE}", "parties_waived_choice": True,
    "evidence": doc("放弃选定声明")}, metadata=judge)["pre_filing_case"]
step("designated: DELEGATED", case["state"] == "PRE_FILING_CASE_STATE_DELEGATED", case["state"])
m = in_mediation(case)
c.request(MED, "EndMediation", {"name": m["name"], "reason": "END_REASON_GAP_TOO_LARGE",
          "detail": "双方分歧较大", "request_id": rid()}, metadata=head)
case = until(case["name"], "PRE_FILING_CASE_STATE_REGISTRATION_PENDING")
step("materials back", case["materials_return"]["cause"] == "RETURN_CAUSE_MEDIATION_FAILED", case.get("materials_return"))
step("registration clock running",
     any(k["name"] == "registration" and "stopped_at" not in k for k in case["clocks"]), case["clocks"])
case = c.request(CD, "RegisterCase", {"name": case["name"], "request_id": rid(),
                 "docket_number": "(2026)辽0203民初1234号"}, metadata=judge)["pre_filing_case"]
step("registered", case["state"] == "PRE_FILING_CASE_STATE_REGISTERED", case["state"])
print("worked example: all steps passed")
