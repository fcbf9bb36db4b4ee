"""The README's worked example of 警调对接 over JSON/HTTP only: the HTTP twin of
referral_example.py (same steps, same actors), with nothing but the Python standard library
(urllib): one 110 referral from intake to CLOSED through the suite's google.api.http paths.
Also fetches /openapi.json and, when `openapi-spec-validator` is importable, validates it.

Usage: referral_example_http.py BASE_URL [DATA_DIR]     (BASE_URL e.g. http://127.0.0.1:50061)
Tokens are minted with `fengqiao token --data-dir DATA_DIR` (default ./data) for the sample
actors; set FENGQIAO_BIN to the binary (default: target/debug/fengqiao, else `fengqiao`).
Exits non-zero at the first failure.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

base = sys.argv[1].rstrip("/")
data_dir = sys.argv[2] if len(sys.argv) > 2 else "./data"
fq = os.environ.get("FENGQIAO_BIN") or (
    next((p for p in ("target/release/fengqiao", "target/debug/fengqiao") if os.path.exists(p)),
         shutil.which("fengqiao")))


def token(actor):
    out = subprocess.run([fq, "token", "--data-dir", data_dir, "--as", actor],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def step(name, ok=True, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f"  {detail}" if detail else ""), flush=True)
    if not ok:
        sys.exit(1)


def call(method, path, tok, body=None, headers=()):
    """One JSON call; the decoded answer, or FAIL with the google.rpc.Status."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + tok)
    for k, v in headers:
        req.add_header(k, v)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        step(f"{method} {path}", False, f"HTTP {e.code} {e.read().decode()}")


def wait(what, fetch, done):
    for _ in range(300):
        v = fetch()
        if done(v):
            return v
        time.sleep(0.1)
    step(what, False, str(v))


rid = lambda: str(uuid.uuid4())
dispatch = token("xigang-110/dispatch-system")          # the 110 接处警 system
reviewer = token("xigang-110/reviewer-01")               # 指挥室审核员
officer = token("xigang-bayilu-station/officer-01")      # 社区民警
chief = token("xigang-bayilu-station/duty-chief-01")     # 值班所长
mediator = token("xigang-bayilu-mediation-room/mediator-01")  # 驻所人民调解员

# 0. The contract of all of it, as OpenAPI 3.
with urllib.request.urlopen(base + "/openapi.json", timeout=20) as r:
    doc = json.load(r)
try:
    from openapi_spec_validator import validate
    validate(doc)
    step("0. /openapi.json validates (openapi-spec-validator)", True, f"{len(doc['paths'])} paths")
except ImportError:
    step("0. /openapi.json fetched (openapi-spec-validator not installed)",
         os.environ.get("REQUIRE_OPENAPI_VALIDATOR") != "1")

# 1. 110 dispatch pushes the referral. The rule's body is the referral; the request id is a
#    query parameter.
incident = "H" + time.strftime("%Y%m%d%H%M%S")  # not the gRPC example's number
ref = call("POST", f"/v1/policereferral/referrals?requestId={rid()}", dispatch, {
    "incidentNumber": incident,
    "callTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "caller": {"name": "王某", "phone": "13912345678"},
    "location": {"regionCode": "210203", "detail": "八一路某小区"},
    "category": "DISPUTE_CATEGORY_NEIGHBOURHOOD",
    "summary": "楼上住户夜间噪音扰民，双方发生口角",
    "parties": [
        {"role": "PARTY_ROLE_APPLICANT", "name": "张某", "idType": "ID_TYPE_RESIDENT_ID_CARD",
         "idNumber": "11010519491231002X", "phone": "13812345678"},
        {"role": "PARTY_ROLE_RESPONDENT", "name": "李某", "phone": "0411-82345678"},
    ],
    "onSceneHandling": "民警到场劝解，双方情绪平稳，同意调解",
    "policeStation": "agencies/xigang-bayilu-station"})["referral"]
step("1. POST /v1/policereferral/referrals (110 dispatch)", True, f"{ref['name']} {ref['state']}")

# 2. The station officer drafts the transfer to the station's mediation room and submits it.
d = call("POST", f"/v1/policereferral/{ref['name']}:draftTransfer", officer, {
    "toAgency": "agencies/xigang-bayilu-mediation-room", "note": "110警情，民间纠纷，建议调解",
    "submit": True, "requestId": rid()})
transfer = d["transfer"]["name"]
step("2. :draftTransfer + submit (station officer)", True, f"{transfer} {d['transfer']['state']}")

# 3. Two approvals by two different people.
t = call("POST", f"/v1/{transfer}:approve", reviewer,
         {"stepIndex": 0, "comment": "指挥室审核通过", "requestId": rid()})["transfer"]
step("3. :approve step 0 (command room reviewer)", True, t["state"])
t = call("POST", f"/v1/{transfer}:approve", chief,
         {"stepIndex": 1, "comment": "同意移送", "requestId": rid()})["transfer"]
step("4. :approve step 1 (duty chief)", True, t["state"])

# 4. Delivered to the mediation room: a mediation case appears.
case = wait("the case reaches the mediation room",
            lambda: call("GET", f"/v1/mediation/cases?caseId={ref['caseId']}", mediator)
            .get("mediationCases", []),
            lambda cs: bool(cs))[0]
step("5. delivered: the mediation room sees the case", True, f"{case['name']} {case['state']}")
case = call("POST", f"/v1/mediation/{case['name']}:accept", mediator,
            {"comment": "属于邻里纠纷，予以受理", "requestId": rid()})["mediationCase"]
step("6. :accept (mediator)", True, case["state"])

# 5. Both parties consent (人民调解法 Art 17); a mediator is assigned from the roster.
for p in case["parties"]:
    case = call("POST", f"/v1/mediation/{case['name']}:recordConsent", mediator, {
        "partyId": p["partyId"], "decision": "CONSENT_DECISION_CONSENTED",
        "method": "CONSENT_METHOD_WRITTEN", "requestId": rid()})["mediationCase"]
step("7. :recordConsent, both parties", True, case["state"])
case = call("POST", f"/v1/mediation/{case['name']}:assignMediator", mediator,
            {"automatic": {}, "requestId": rid()})["mediationCase"]
step("8. :assignMediator (automatic)", True, case["state"])

# 6. The agreement: drafted, signed by both parties and the mediator, sealed.
ids = [p["partyId"] for p in case["parties"]]
# Answers are masked; the agreement records each party's identity (人民调解法 Art 29), so the
# mediator reads the parties in full (header x-fengqiao-personal-info: full, access-logged).
full = call("GET", f"/v1/mediation/cases?caseId={ref['caseId']}", mediator,
            headers=[("X-Fengqiao-Personal-Info", "full")])["mediationCases"][0]
case = call("POST", f"/v1/mediation/{case['name']}:draftAgreement", mediator, {
    "requestId": rid(), "agreement": {
        "parties": full["parties"],
        "factsAndResponsibilities": "李某夜间噪音影响张某休息，李某负主要责任",
        "terms": [{"description": "李某每日22时后不再进行产生噪音的活动，并向张某赔礼道歉",
                   "obligorPartyIds": ids[1:2], "obligeePartyIds": ids[:1]}],
        "performanceManner": "即时履行",
        "performanceDeadline": "2030-01-01T00:00:00Z"}})["mediationCase"]
step("9. :draftAgreement", True, case["state"])
signatures = [{"signerKind": "SIGNER_KIND_PARTY", "partyId": p, "signerName": "当事人",
               "method": "SIGNATURE_METHOD_HANDWRITTEN"} for p in ids]
signatures += [{"signerKind": "SIGNER_KIND_MEDIATOR", "signerName": "调解员",
                "method": "SIGNATURE_METHOD_HANDWRITTEN"},
               {"signerKind": "SIGNER_KIND_COMMITTEE_SEAL", "signerName": "调委会",
                "method": "SIGNATURE_METHOD_SEAL"}]
for s in signatures:
    case = call("POST", f"/v1/mediation/{case['name']}:signAgreement", mediator,
                {"signature": s, "requestId": rid()})["mediationCase"]
step("10. :signAgreement x4 (parties, mediator, committee seal)", True, case["state"])
case = call("POST", f"/v1/mediation/{case['name']}:endMediation", mediator,
            {"reason": "END_REASON_AGREEMENT", "requestId": rid()})["mediationCase"]
step("11. :endMediation (AGREEMENT)", True, case["state"])

# 7. The feedback reaches the station; the officer acknowledges it and the referral closes.
ref = wait("the feedback reaches the station",
           lambda: call("GET", f"/v1/policereferral/{ref['name']}", officer)["referral"],
           lambda r: r["state"] == "REFERRAL_STATE_FEEDBACK_RECEIVED")
step("12. feedback received at the station", True, ref["state"])
ref = call("POST", f"/v1/policereferral/{ref['name']}:acknowledgeFeedback", officer,
           {"requestId": rid()})["referral"]
step("13. :acknowledgeFeedback (station officer)", ref["state"] == "REFERRAL_STATE_CLOSED",
     ref["state"])
t = call("GET", f"/v1/{transfer}", officer)["transfer"]
step("the transfer, as the station sees it", True, t["state"])
print(f"referral {ref['name']} CLOSED over HTTP; transfer {transfer} {t['state']}", flush=True)
