"""The README's worked example of 警调对接: one 110 referral from intake to CLOSED, run against a
fresh `fengqiao dev` from Python (grpcio, grpc-requests, server reflection only). Prints each
step and the referral's, transfer's and mediation case's states.

Usage: referral_example.py ADDR [DATA_DIR]
Tokens are minted with `fengqiao token --data-dir DATA_DIR` (default ./data) for the sample
actors; set FENGQIAO_BIN to the binary (default: target/debug/fengqiao, else `fengqiao`).
Exits non-zero at the first failure.
"""

import os
import shutil
import subprocess
import sys
import time
import uuid

from grpc_requests import Client

addr = sys.argv[1]
data_dir = sys.argv[2] if len(sys.argv) > 2 else "./data"
fq = os.environ.get("FENGQIAO_BIN") or (
    next((p for p in ("target/release/fengqiao", "target/debug/fengqiao") if os.path.exists(p)),
         shutil.which("fengqiao")))


def token(actor):
    out = subprocess.run([fq, "token", "--data-dir", data_dir, "--as", actor],
                         check=True, capture_output=True, text=True)
    return [("authorization", "Bearer " + out.stdout.strip())]


dispatch = token("xigang-110/dispatch-system")          # the 110 接处警 system
reviewer = token("xigang-110/reviewer-01")               # 指挥室审核员
officer = token("xigang-bayilu-station/officer-01")      # 社区民警
chief = token("xigang-bayilu-station/duty-chief-01")     # 值班所长
mediator = token("xigang-bayilu-mediation-room/mediator-01")  # 驻所人民调解员

c = Client.get_by_endpoint(addr)
POLICE = "fengqiao.policereferral.v1.PoliceReferralService"
TR = "fengqiao.router.v1.TransferService"
MED = "fengqiao.mediation.v1.MediationService"
rid = lambda: str(uuid.uuid4())


def step(name, ok=True, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f"  {detail}" if detail else ""), flush=True)
    if not ok:
        sys.exit(1)


def wait(what, fetch, done):
    for _ in range(300):
        v = fetch()
        if done(v):
            return v
        time.sleep(0.1)
    step(what, False, str(v))


# 1. 110 dispatch pushes the referral (a neighbourhood noise dispute, handled on scene).
incident = "J" + time.strftime("%Y%m%d%H%M%S")
ref = c.request(POLICE, "CreateReferral", {"request_id": rid(), "referral": {
    "incident_number": incident,
    "call_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "caller": {"name": "王某", "phone": "13912345678"},
    "location": {"region_code": "210203", "detail": "八一路某小区"},
    "category": "DISPUTE_CATEGORY_NEIGHBOURHOOD",
    "summary": "楼上住户夜间噪音扰民，双方发生口角",
    "parties": [
        {"role": "PARTY_ROLE_APPLICANT", "name": "张某", "id_type": "ID_TYPE_RESIDENT_ID_CARD",
         "id_number": "11010519491231002X", "phone": "13812345678"},
        {"role": "PARTY_ROLE_RESPONDENT", "name": "李某", "phone": "0411-82345678"},
    ],
    "on_scene_handling": "民警到场劝解，双方情绪平稳，同意调解",
    "police_station": "agencies/xigang-bayilu-station"}}, metadata=dispatch)["referral"]
step("1. CreateReferral (110 dispatch)", True, f"{ref['name']} {ref['state']}")

# 2. The station officer drafts the transfer to the station's mediation room and submits it.
d = c.request(POLICE, "DraftTransfer", {
    "name": ref["name"], "to_agency": "agencies/xigang-bayilu-mediation-room",
    "note": "110警情，民间纠纷，建议调解", "submit": True, "request_id": rid()}, metadata=officer)
transfer = d["transfer"]["name"]
step("2. DraftTransfer + submit (station officer)", True, f"{transfer} {d['transfer']['state']}")

# 3. Two approvals: 指挥室审核 (step 0), 值班所长审批 (step 1); two different people.
t = c.request(TR, "ApproveTransfer", {"name": transfer, "step_index": 0,
              "comment": "指挥室审核通过", "request_id": rid()}, metadata=reviewer)["transfer"]
step("3. ApproveTransfer step 0 (command room reviewer)", True, t["state"])
t = c.request(TR, "ApproveTransfer", {"name": transfer, "step_index": 1,
              "comment": "同意移送", "request_id": rid()}, metadata=chief)["transfer"]
step("4. ApproveTransfer step 1 (duty chief)", True, t["state"])

# 4. The router delivers the transfer to the mediation room: a mediation case appears.
case = wait("the case reaches the mediation room",
            lambda: c.request(MED, "ListCases", {"case_id": ref["case_id"]},
                              metadata=mediator).get("mediation_cases", []),
            lambda cs: bool(cs))[0]
step("5. delivered: the mediation room sees the case", True, f"{case['name']} {case['state']}")
case = c.request(MED, "AcceptCase", {"name": case["name"], "comment": "属于邻里纠纷，予以受理",
                 "request_id": rid()}, metadata=mediator)["mediation_case"]
step("6. AcceptCase (mediator)", True, case["state"])

# 5. Both parties consent (人民调解法 Art 17); a mediator is assigned automatically from the
#    roster `fengqiao dev` seeded.
for p in case["parties"]:
    case = c.request(MED, "RecordConsent", {"name": case["name"], "party_id": p["party_id"],
                     "decision": "CONSENT_DECISION_CONSENTED", "method": "CONSENT_METHOD_WRITTEN",
                     "request_id": rid()}, metadata=mediator)["mediation_case"]
step("7. RecordConsent, both parties", True, case["state"])
case = c.request(MED, "AssignMediator", {"name": case["name"], "automatic": {},
                 "request_id": rid()}, metadata=mediator)["mediation_case"]
step("8. AssignMediator (automatic)", True,
     f"{case.get('assignment', {}).get('mediator', '')} {case['state']}")

# 6. The agreement: drafted, signed by both parties and the mediator, sealed by the committee.
ids = [p["party_id"] for p in case["parties"]]
# Answers are masked (身份证号 210203**********39); the agreement records each party's name and
# identity (人民调解法 Art 29), so the mediator reads them in full: the header
# x-fengqiao-personal-info: full, allowed to the mediator role and written to the access log.
full = c.request(MED, "ListCases", {"case_id": ref["case_id"]},
                 metadata=mediator + [("x-fengqiao-personal-info", "full")])["mediation_cases"][0]
case = c.request(MED, "DraftAgreement", {"name": case["name"], "request_id": rid(), "agreement": {
    "parties": full["parties"],
    "facts_and_responsibilities": "李某夜间噪音影响张某休息，李某负主要责任",
    "terms": [{"description": "李某每日22时后不再进行产生噪音的活动，并向张某赔礼道歉",
               "obligor_party_ids": ids[1:2], "obligee_party_ids": ids[:1]}],
    "performance_manner": "即时履行",
    "performance_deadline": "2030-01-01T00:00:00Z"}}, metadata=mediator)["mediation_case"]
step("9. DraftAgreement", True, case["state"])
signatures = [{"signer_kind": "SIGNER_KIND_PARTY", "party_id": p, "signer_name": "当事人",
               "method": "SIGNATURE_METHOD_HANDWRITTEN"} for p in ids]
signatures += [{"signer_kind": "SIGNER_KIND_MEDIATOR", "signer_name": "调解员",
                "method": "SIGNATURE_METHOD_HANDWRITTEN"},
               {"signer_kind": "SIGNER_KIND_COMMITTEE_SEAL", "signer_name": "调委会",
                "method": "SIGNATURE_METHOD_SEAL"}]
for s in signatures:
    case = c.request(MED, "SignAgreement", {"name": case["name"], "signature": s,
                     "request_id": rid()}, metadata=mediator)["mediation_case"]
step("10. SignAgreement x4 (parties, mediator, committee seal)", True, case["state"])
case = c.request(MED, "EndMediation", {"name": case["name"], "reason": "END_REASON_AGREEMENT",
                 "request_id": rid()}, metadata=mediator)["mediation_case"]
step("11. EndMediation (AGREEMENT): feedback agreement_reached to the station", True,
     case["state"])

# 7. The feedback reaches the station; the officer acknowledges it and the referral closes.
ref = wait("the feedback reaches the station",
           lambda: c.request(POLICE, "GetReferral", {"name": ref["name"]},
                             metadata=officer)["referral"],
           lambda r: r["state"] == "REFERRAL_STATE_FEEDBACK_RECEIVED")
step("12. feedback received at the station", True, ref["state"])
ref = c.request(POLICE, "AcknowledgeFeedback", {"name": ref["name"], "request_id": rid()},
                metadata=officer)["referral"]
step("13. AcknowledgeFeedback (station officer)", ref["state"] == "REFERRAL_STATE_CLOSED",
     ref["state"])
t = c.request(TR, "GetTransfer", {"name": transfer}, metadata=officer)["transfer"]
step("the transfer, as the station sees it", True, t["state"])
print(f"referral {ref['name']} CLOSED; transfer {transfer} {t['state']}", flush=True)
