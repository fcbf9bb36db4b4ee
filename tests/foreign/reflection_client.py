"""A foreign client: drives a running `fengqiao dev` suite from Python (grpcio, grpc-requests)
knowing nothing but what server reflection tells it.

Usage: reflection_client.py ADDR TOKEN_DISPATCH TOKEN_OFFICER

Checks: reflection lists the services; health is SERVING; a 110 referral is taken in and
screened as a civil dispute (the state and the created resource come back as reflection
describes them); the contracts' google.api annotations come through reflection (Transfer is a
resource, Transfer.state is OUTPUT_ONLY); the same request id with another payload is ALREADY_EXISTS; bad input is
INVALID_ARGUMENT naming the field; another agency gets NOT_FOUND; no token is UNAUTHENTICATED.
Prints one line per check and a closing "N passed, N failed" line; exits non-zero on failure.
"""

import sys
import uuid

import grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
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

# The annotations as a foreign tool sees them: raw FileDescriptorProtos from reflection.
# google.api.field_behavior is field 1052 of FieldOptions (repeated enum), OUTPUT_ONLY = 3;
# google.api.resource is field 1053 of MessageOptions.
db = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(addr))
transfer_file = db.FindFileContainingSymbol("fengqiao.router.v1.Transfer")
check(
    "reflection serves the vendored google/api files",
    db.FindFileByName("google/api/field_behavior.proto").package == "google.api",
)


def field_behaviors(options):
    """The google.api.field_behavior values in encoded FieldOptions, packed or not."""
    raw, i, out = options.SerializeToString(), 0, []

    def varint():
        nonlocal i
        v = shift = 0
        while True:
            b = raw[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return v

    while i < len(raw):
        key = varint()
        num, wire = key >> 3, key & 7
        if wire == 0:
            v = varint()
            if num == 1052:
                out.append(v)
        elif wire == 2:
            n = varint()
            end = i + n
            if num == 1052:
                while i < end:
                    out.append(varint())
            i = end
        elif wire == 5:
            i += 4
        elif wire == 1:
            i += 8
        else:
            break
    return out


msg = next(m for m in transfer_file.message_type if m.name == "Transfer")
state = next(f for f in msg.field if f.name == "state")
check(
    "Transfer.state is OUTPUT_ONLY",
    field_behaviors(state.options) == [3],
    field_behaviors(state.options),
)
check(
    "Transfer is a google.api.resource",
    b"transfers/{transfer}" in msg.options.SerializeToString(),
)


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
