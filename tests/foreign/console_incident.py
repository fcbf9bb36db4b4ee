"""Makes one real delivery incident (投递异常) on a fresh `fengqiao dev`, for the console's
browser test to retry.

Usage: console_incident.py ADDR DATA_DIR
The platform administrator points the station mediation room's push endpoint at a stub
AgencyInboxService that answers every Deliver with FAILED_PRECONDITION / NO_HANDLER (the
router's permanent refusal: the incident opens on the first attempt); a 110 referral is then
transferred to the room (the worked example's first four steps), the incident opens, the
stub is stopped and the room's real endpoint is put back — the deployment is "fixed", so an
administrator's retry delivers the message. Prints the incident's name on the last line.
Tokens come from `fengqiao token` (FENGQIAO_BIN, default target/debug/fengqiao).
"""

import os
import subprocess
import sys
import time
import uuid
from concurrent import futures

import grpc
from grpc_requests import Client

addr, data_dir = sys.argv[1], sys.argv[2]
fq = os.environ.get("FENGQIAO_BIN") or "target/debug/fengqiao"
rid = lambda: str(uuid.uuid4())


def token(actor):
    out = subprocess.run([fq, "token", "--data-dir", data_dir, "--as", actor],
                         check=True, capture_output=True, text=True)
    return [("authorization", "Bearer " + out.stdout.strip())]


def fail(what):
    print("FAIL " + what, flush=True)
    sys.exit(1)


# ---- the stub: FAILED_PRECONDITION with google.rpc.ErrorInfo{reason: NO_HANDLER} ---------------

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num, payload):
    """A length-delimited protobuf field."""
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


MESSAGE = b"no service here keeps records for this route"
ERROR_INFO = _field(1, b"NO_HANDLER") + _field(2, b"fengqiao")
STATUS = (_varint(1 << 3) + _varint(9) + _field(2, MESSAGE)
          + _field(3, _field(1, b"type.googleapis.com/google.rpc.ErrorInfo") + _field(2, ERROR_INFO)))


class _Refusal(grpc.Status):
    code = grpc.StatusCode.FAILED_PRECONDITION
    details = MESSAGE.decode()
    trailing_metadata = (("grpc-status-details-bin", STATUS),)


def _deliver(_request, context):
    context.abort_with_status(_Refusal())


server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
    "fengqiao.inbox.v1.AgencyInboxService",
    {"Deliver": grpc.unary_unary_rpc_method_handler(_deliver, request_deserializer=None,
                                                    response_serializer=None)}),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()

# ---- the incident ------------------------------------------------------------------------------

admin = token("xigang-justice-bureau/admin")
dispatch = token("xigang-110/dispatch-system")
officer = token("xigang-bayilu-station/officer-01")
reviewer = token("xigang-110/reviewer-01")
chief = token("xigang-bayilu-station/duty-chief-01")
c = Client.get_by_endpoint(addr)
AG = "fengqiao.router.v1.AgencyService"
DL = "fengqiao.router.v1.DeliveryService"
ROOM = "agencies/xigang-bayilu-mediation-room"


def set_endpoint(endpoint):
    a = c.request(AG, "GetAgency", {"name": ROOM}, metadata=admin)["agency"]
    c.request(AG, "UpdateAgency", {"agency": {"name": ROOM, "endpoint": endpoint, "etag": a["etag"]},
                                   "update_mask": "endpoint", "request_id": rid()}, metadata=admin)
    return a["endpoint"]


real = set_endpoint(f"http://127.0.0.1:{port}")
ref = c.request("fengqiao.policereferral.v1.PoliceReferralService", "CreateReferral", {
    "request_id": rid(), "referral": {
        "incident_number": "J" + time.strftime("%Y%m%d%H%M%S") + "9",
        "call_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "caller": {"name": "赵某", "phone": "13912345670"},
        "location": {"region_code": "210203", "detail": "八一路某商铺"},
        "category": "DISPUTE_CATEGORY_CONSUMER",
        "summary": "顾客与商户就退货发生争执",
        "parties": [{"role": "PARTY_ROLE_APPLICANT", "name": "赵某", "phone": "13912345670"},
                    {"role": "PARTY_ROLE_RESPONDENT", "name": "钱某", "phone": "0411-82345670"}],
        "on_scene_handling": "民警到场劝解，双方同意调解",
        "police_station": "agencies/xigang-bayilu-station"}}, metadata=dispatch)["referral"]
transfer = c.request("fengqiao.policereferral.v1.PoliceReferralService", "DraftTransfer", {
    "name": ref["name"], "to_agency": ROOM, "note": "退货纠纷，建议调解", "submit": True,
    "request_id": rid()}, metadata=officer)["transfer"]["name"]
TR = "fengqiao.router.v1.TransferService"
c.request(TR, "ApproveTransfer", {"name": transfer, "step_index": 0, "comment": "审核通过",
                                  "request_id": rid()}, metadata=reviewer)
c.request(TR, "ApproveTransfer", {"name": transfer, "step_index": 1, "comment": "同意移送",
                                  "request_id": rid()}, metadata=chief)

incident = None
for _ in range(200):
    found = c.request(DL, "ListDeliveryIncidents", {"states": ["DELIVERY_INCIDENT_STATE_OPEN"]},
                      metadata=admin).get("delivery_incidents", [])
    mine = [i for i in found if i.get("transfer") == transfer]
    if mine:
        incident = mine[0]
        break
    time.sleep(0.1)
if incident is None:
    fail("no delivery incident opened for " + transfer)
if incident.get("last_error_code") != "FAILED_PRECONDITION":
    fail("unexpected incident " + str(incident))
server.stop(0)
set_endpoint(real)
print("ok   a delivery incident is open (NO_HANDLER at the stub); the real endpoint is back",
      flush=True)
print(incident["name"], flush=True)
