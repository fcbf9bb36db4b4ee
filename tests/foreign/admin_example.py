"""The README's worked example of 行政争议实质性化解, run against a fresh `fengqiao dev` from
Python (grpcio, grpc-requests, server reflection only): a 征收补偿 dispute in 行政复议 mediated
to a 复议调解书 that takes effect only with the last signature and the reviewing organ's seal,
and a legality claim refused for mediation with the article named.

Usage: admin_example.py ADDR [DATA_DIR]    (FENGQIAO_BIN as for referral_example.py)
Prints one line per step; exits non-zero at the first failure.
"""

import os
import shutil
import subprocess
import sys
import uuid

import grpc
from grpc_requests import Client

addr = sys.argv[1]
data_dir = sys.argv[2] if len(sys.argv) > 2 else "./data"
fq = os.environ.get("FENGQIAO_BIN") or (
    next((p for p in ("target/release/fengqiao", "target/debug/fengqiao") if os.path.exists(p)),
         shutil.which("fengqiao")))


def tok(actor):
    out = subprocess.run([fq, "token", "--data-dir", data_dir, "--as", actor],
                         check=True, capture_output=True, text=True)
    return [("authorization", "Bearer " + out.stdout.strip())]


c = Client.get_by_endpoint(addr)
rid = lambda: str(uuid.uuid4())
doc = lambda n: {"display_name": n, "uri": "centre://docs/" + n, "media_type": "application/pdf",
                 "sha256": "cd" * 32}


def step(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f"  {detail}" if detail else ""), flush=True)
    if not ok:
        sys.exit(1)


# The snippet of the README, step by step.
AD = "fengqiao.admindispute.v1.AdminDisputeService"
centre, organ = tok("xigang-admin-dispute-centre/coordinator-01"), tok("xigang-housing-bureau/liaison-01")
reviewer = tok("xigang-government/review-officer")
d = c.request(AD, "CreateDispute", {"request_id": rid(), "region_code": "210203",
    "applicants": [{"party_id": "p1", "role": "PARTY_ROLE_APPLICANT", "name": "王某"}],
    "act": {"kind": "ACT_KIND_EXPROPRIATION", "document_number": "西住建征补〔2026〕7号"},
    "organ": "agencies/xigang-housing-bureau", "reviewing_organ": "agencies/xigang-government",
    "stage": "DISPUTE_STAGE_IN_REVIEW", "facts": "征收补偿标准低于评估价",
    "claims": [{"kind": "CLAIM_KIND_INDEMNIFICATION", "description": "提高补偿"}]},
    metadata=centre)["dispute"]
step("CreateDispute (centre): OPEN, mediation allowed, the review clock runs",
     d["state"] == "DISPUTE_STATE_OPEN" and d.get("scope", {}).get("mediation_allowed") is True
     and len(d.get("clocks", [])) > 0, d["state"])
d = c.request(AD, "StartMediation", {"name": d["name"], "request_id": rid(), "organ_consents": True,
    "consenting_party_ids": ["p1"], "suspension_notice": doc("中止通知书")}, metadata=centre)["dispute"]
step("StartMediation: both sides consent, the review is suspended (行政复议法 Art 39(6))",
     d["state"] == "DISPUTE_STATE_MEDIATING" and d.get("review_suspended") is True, d["state"])
d = c.request(AD, "DraftAgreement", {"name": d["name"], "request_id": rid(),
              "document": doc("复议调解书")}, metadata=centre)["dispute"]
step("DraftAgreement: the 复议调解书 awaits signatures", d["state"] == "DISPUTE_STATE_AGREEMENT_PENDING",
     d["state"])
d = c.request(AD, "SignAgreement", {"name": d["name"], "request_id": rid(), "party_id": "p1"},
              metadata=centre)["dispute"]
step("SignAgreement (applicant): not yet in effect", d["state"] == "DISPUTE_STATE_AGREEMENT_PENDING",
     d["state"])
d = c.request(AD, "SignAgreement", {"name": d["name"], "request_id": rid()}, metadata=organ)["dispute"]
step("SignAgreement (the organ): not yet in effect without the seal (Art 73)",
     d["state"] == "DISPUTE_STATE_AGREEMENT_PENDING", d["state"])
d = c.request(AD, "SealAgreement", {"name": d["name"], "request_id": rid()}, metadata=reviewer)["dispute"]
step("SealAgreement (reviewing organ): RESOLVED", d["state"] == "DISPUTE_STATE_RESOLVED", d["state"])

# A legality claim is outside Art 60's scope: refused for mediation, naming the article.
d2 = c.request(AD, "CreateDispute", {"request_id": rid(), "region_code": "210203",
    "applicants": [{"party_id": "p1", "role": "PARTY_ROLE_APPLICANT", "name": "赵某"}],
    "act": {"kind": "ACT_KIND_EXPROPRIATION", "document_number": "西住建征〔2026〕9号"},
    "organ": "agencies/xigang-housing-bureau", "stage": "DISPUTE_STAGE_BEFORE_REVIEW",
    "facts": "征收决定程序违法", "claims": [{"kind": "CLAIM_KIND_LEGALITY", "description": "确认违法"}]},
    metadata=centre)["dispute"]
try:
    c.request(AD, "StartMediation", {"name": d2["name"], "request_id": rid(), "organ_consents": True,
              "consenting_party_ids": ["p1"]}, metadata=centre)
    step("a legality claim is refused for mediation", False, "it was accepted")
except grpc.RpcError as e:
    step("a legality claim is refused for mediation (行政诉讼法第六十条)",
         e.code() == grpc.StatusCode.FAILED_PRECONDITION and "第六十条" in (e.details() or ""),
         f"{e.code()} {e.details()}")

# Not a participant: NOT_FOUND.
try:
    c.request(AD, "GetDispute", {"name": d["name"]}, metadata=tok("xigang-court/clerk-01"))
    step("a non-participant is refused", False, "it could read the dispute")
except grpc.RpcError as e:
    step("a non-participant gets NOT_FOUND (行诉解释 Art 86)", e.code() == grpc.StatusCode.NOT_FOUND,
         str(e.code()))
