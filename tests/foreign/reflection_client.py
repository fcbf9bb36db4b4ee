"""A foreign client: drives a running `fengqiao dev` suite from Python (grpcio, grpc-requests)
knowing nothing but what server reflection tells it.

Usage: reflection_client.py ADDR TOKEN_DISPATCH TOKEN_OFFICER

Checks: reflection lists the services; health is SERVING; a 110 referral is taken in and
screened as a civil dispute (the state and the created resource come back as reflection
describes them); the same request id with another payload is ALREADY_EXISTS; bad input is
INVALID_ARGUMENT naming the field; another agency gets NOT_FOUND; no token is UNAUTHENTICATED.
Prints one line per check and a closing "N passed, N failed" line; exits non-zero on failure.
"""

import sys
import uuid

import grpc
from grpc_requests import Client

addr, tok_dispatch, tok_officer = sys.argv[1], sys.argv[2], sys.argv[3]
POLICE = "fengqiao.policereferral.v1.PoliceReferralService"
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def auth(token):
    return [("authorization", f"Bearer {token}")]


def code_of(call):
    try:
        call()
    except grpc.RpcError as e:  # the status a foreign client sees
        return e.code()
    return grpc.StatusCode.OK


client = Client.get_by_endpoint(addr)
services = client.service_names
check("reflection lists the police-referral service", POLICE in services, services)
check(
    "reflection lists the router's transfer service",
    "fengqiao.router.v1.TransferService" in services,
)
health = client.request("grpc.health.v1.Health", "Check", {"service": ""})
check("health is SERVING", health.get("status") == "SERVING", health)


def referral(incident):
    return {
        "incident_number": incident,
        "call_time": "2026-09-21T12:26:40Z",
        "caller": {"name": "王某", "phone": "13912345678"},
        "location": {"region_code": "210203", "detail": "八一路某小区"},
        "category": "DISPUTE_CATEGORY_NEIGHBOURHOOD",
        "summary": "楼上住户夜间噪音扰民，双方发生口角",
        "parties": [
            {
                "role": "PARTY_ROLE_APPLICANT",
                "name": "张某",
                "id_type": "ID_TYPE_RESIDENT_ID_CARD",
                "id_number": "11010519491231002X",
                "phone": "13812345678",
            },
            {"role": "PARTY_ROLE_RESPONDENT", "name": "李某", "phone": "0411-82345678"},
        ],
        "on_scene_handling": "民警到场劝解，双方情绪平稳，同意调解",
        "police_station": "agencies/xigang-bayilu-station",
    }


incident = "J" + uuid.uuid4().hex[:12].upper()
rid = str(uuid.uuid4())
created = client.request(
    POLICE,
    "CreateReferral",
    {"referral": referral(incident), "request_id": rid},
    metadata=auth(tok_dispatch),
)
r = created.get("referral", {})
check("a 110 referral is taken in", r.get("name", "").startswith("referrals/"), created)
check(
    "it is screened as a civil dispute",
    r.get("screening", {}).get("result") == "SCREENING_RESULT_CIVIL_DISPUTE",
    r.get("screening"),
)
again = client.request(
    POLICE,
    "CreateReferral",
    {"referral": referral(incident), "request_id": rid},
    metadata=auth(tok_dispatch),
)
check(
    "a replay returns the first answer",
    again.get("referral", {}).get("name") == r.get("name"),
)
other = referral("J" + uuid.uuid4().hex[:12].upper())
check(
    "the same request id with another payload is ALREADY_EXISTS",
    code_of(
        lambda: client.request(
            POLICE,
            "CreateReferral",
            {"referral": other, "request_id": rid},
            metadata=auth(tok_dispatch),
        )
    )
    == grpc.StatusCode.ALREADY_EXISTS,
)
bad = referral("J" + uuid.uuid4().hex[:12].upper())
bad["parties"][0]["id_number"] = "110105194912310021"  # wrong check digit
check(
    "a wrong ID check digit is INVALID_ARGUMENT",
    code_of(
        lambda: client.request(
            POLICE,
            "CreateReferral",
            {"referral": bad, "request_id": str(uuid.uuid4())},
            metadata=auth(tok_dispatch),
        )
    )
    == grpc.StatusCode.INVALID_ARGUMENT,
)
got = client.request(
    POLICE, "GetReferral", {"name": r.get("name")}, metadata=auth(tok_officer)
)
check(
    "the handling station reads it",
    got.get("referral", {}).get("incident_number") == incident,
)
check(
    "no token is UNAUTHENTICATED",
    code_of(lambda: client.request(POLICE, "GetReferral", {"name": r.get("name")}))
    == grpc.StatusCode.UNAUTHENTICATED,
)
print(f"foreign-client: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
