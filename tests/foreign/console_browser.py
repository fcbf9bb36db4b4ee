"""The web console in real headless Chromium (Selenium), checked against the JSON API.

Usage: console_browser.py BASE_URL OFFICER_TOKEN ADMIN_TOKEN SCREENSHOT_DIR INCIDENT
BASE_URL is the suite's gRPC port as http://host:port (the gateway serves /console/ there).
Run by scripts/console-browser-test.sh after the 警调对接 worked example, so the station
officer's agency has a closed transfer with a case timeline, and after console_incident.py,
so INCIDENT (`deliveryIncidents/…`) is open and a retry delivers it. Exits non-zero at the first
failure; every page is screenshotted into SCREENSHOT_DIR.
"""

import datetime
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

base, officer, admin, shots, incident = sys.argv[1:6]
os.makedirs(shots, exist_ok=True)


def step(name, ok=True, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f"  {detail}" if detail else ""), flush=True)
    if not ok:
        sys.exit(1)


def api(path, tok, params=None, method="GET", body=None):
    """One JSON call of the gateway, as the page makes it: (HTTP status, JSON)."""
    q = urllib.parse.urlencode(params or {}, doseq=True)
    req = urllib.request.Request(base + path + ("?" + q if q else ""), method=method)
    if tok:
        req.add_header("Authorization", "Bearer " + tok)
    data = None
    if body is not None:
        req.add_header("Content-Type", "application/json")
        data = json.dumps(body).encode()
    try:
        with urllib.request.urlopen(req, data, timeout=20) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def stats_window():
    """The page's statistics window: 365 days before the next midnight, China Standard Time."""
    cst = datetime.timezone(datetime.timedelta(hours=8))
    now = datetime.datetime.now(cst)
    end = datetime.datetime(now.year, now.month, now.day, tzinfo=cst) + datetime.timedelta(days=1)
    start = end - datetime.timedelta(days=365)
    z = lambda t: t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {"startTime": z(start), "endTime": z(end)}


# ---- static files and the 401 of a data call without a token --------------------------------

with urllib.request.urlopen(base + "/console/", timeout=20) as r:
    csp = r.headers.get("Content-Security-Policy", "")
    step("GET /console/ without a token", r.status == 200 and "default-src 'self'" in csp,
         r.headers.get("Content-Type"))
status, err = api("/v1/transfers", None)
step("a data call without a token is 401 UNAUTHENTICATED", status == 401 and err.get("code") == 16,
     str(status))

opts = Options()
opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--window-size=1400,1800", "--lang=zh-CN"):
    opts.add_argument(a)
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                          options=opts)
wait = WebDriverWait(driver, 30)


def ready(view):
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == view)


def text(id_):
    return driver.find_element(By.ID, id_).text.strip()


def shot(name):
    # The whole page, not just the window.
    h = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, max(900, min(h + 50, 6000)))
    driver.save_screenshot(os.path.join(shots, name + ".png"))


def login(tok):
    driver.get(base + "/console/")
    ready("login")
    box = driver.find_element(By.ID, "token-input")
    box.clear()
    box.send_keys(tok)
    driver.find_element(By.ID, "login-button").click()
    ready("dashboard")


def no_console_errors():
    bad = [e for e in driver.get_log("browser")
           if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]]
    step("no script error or CSP violation in the browser", not bad, json.dumps(bad)[:800])


try:
    # ---- login page ---------------------------------------------------------------------------
    driver.get(base + "/console/")
    ready("login")
    step("the login page shows without a token", driver.find_element(By.ID, "view-login").is_displayed()
         and not driver.find_element(By.ID, "bar").is_displayed())
    shot("01-login")

    # ---- dashboard of the station --------------------------------------------------------------
    login(officer)
    who = text("whoami")
    step("who the viewer is", "xigang-bayilu-station" in who and "officer-01" in who and "民警" in who, who)
    err = driver.find_element(By.ID, "error")
    step("the dashboard loaded without an error", not err.is_displayed(), err.text)

    w = stats_window()
    _, by_state = api("/v1/transferStatistics", officer,
                      dict(w, groupBy="STATISTICS_DIMENSION_STATE"))
    want = {r.get("state", "TRANSFER_STATE_UNSPECIFIED"): int(r.get("transferCount", 0))
            for r in by_state.get("rows", [])}
    shown = {}
    for tr in driver.find_elements(By.CSS_SELECTOR, "#state-table tbody tr[data-state]"):
        shown[tr.get_attribute("data-state")] = int(tr.find_element(By.CSS_SELECTOR, "td.count").text)
    step("state counts as GetTransferStatistics(group_by=STATE) answers", shown == want and want,
         f"page {shown} api {want}")
    _, total = api("/v1/transferStatistics", officer, w)
    total_n = int((total.get("rows") or [{}])[0].get("transferCount", 0))
    step("total transfers as the API counts them", text("total-transfers") == str(total_n),
         f"{text('total-transfers')} vs {total_n}")
    _, overdue = api("/v1/transfers", officer, {"overdueOnly": "true", "pageSize": 100})
    n_overdue = len(overdue.get("transfers", []))
    step("overdue count as ListTransfers(overdue_only) answers", text("overdue-count") == str(n_overdue),
         f"{text('overdue-count')} vs {n_overdue}")
    outcomes = {o["outcomeCode"]: int(o["count"])
                for o in (total.get("rows") or [{}])[0].get("outcomeCounts", [])}
    shown_out = {tr.get_attribute("data-outcome"): int(tr.find_element(By.CSS_SELECTOR, "td.count").text)
                 for tr in driver.find_elements(By.CSS_SELECTOR, "#outcome-table tbody tr[data-outcome]")}
    step("outcome distribution as the API answers", shown_out == outcomes and "agreement_reached" in outcomes,
         f"page {shown_out} api {outcomes}")
    charts = driver.execute_script(
        "return ['chart-states','chart-trend','chart-hotspots'].map(id => !!Chart.getChart(id))")
    step("the three charts are drawn (vendored Chart.js)", all(charts), str(charts))

    _, recent = api("/v1/transfers", officer, {"pageSize": 20})
    api_names = [t["name"] for t in recent.get("transfers", [])]
    page_names = [tr.get_attribute("data-transfer")
                  for tr in driver.find_elements(By.CSS_SELECTOR, "#recent-table tbody tr[data-transfer]")]
    step("recent transfers as ListTransfers answers", page_names == api_names and api_names,
         f"{page_names} vs {api_names}")
    first = next(t for t in recent["transfers"] if t["state"] == "TRANSFER_STATE_CLOSED")
    case_id = first["caseSnapshot"]["caseId"]
    open_n = sum(n for st, n in want.items() if st not in (
        "TRANSFER_STATE_CLOSED", "TRANSFER_STATE_WITHDRAWN", "TRANSFER_STATE_DECLINED",
        "TRANSFER_STATE_EXPIRED", "TRANSFER_STATE_RETURNED", "TRANSFER_STATE_ESCALATED"))
    step("open (在办) count from the same statistics", text("open-count") == str(open_n) and open_n >= 1,
         f"{text('open-count')} vs {open_n}")
    shot("02-dashboard")
    no_console_errors()

    # ---- the case page --------------------------------------------------------------------------
    driver.find_element(By.CSS_SELECTOR, f"#recent-table a.case-link[data-case-id='{case_id}']").click()
    ready("case")
    step("the case page shows the case id", text("case-id") == case_id, text("case-id"))
    _, tl = api("/v1/caseTimeline", officer, {"caseId": case_id, "pageSize": 200})
    api_seq = [str(e.get("sequence", "")) for e in tl.get("events", [])]
    page_seq = [tr.get_attribute("data-sequence")
                for tr in driver.find_elements(By.CSS_SELECTOR, "#timeline-table tbody tr[data-sequence]")]
    step("the timeline's events as GetCaseTimeline answers", page_seq == api_seq and len(api_seq) >= 5,
         f"{len(page_seq)} events vs {len(api_seq)}")
    page_tr = [tr.get_attribute("data-transfer")
               for tr in driver.find_elements(By.CSS_SELECTOR, "#case-transfers tbody tr[data-transfer]")]
    step("the case's transfers as the API lists them", page_tr == tl.get("transfers"), str(page_tr))
    state_cell = driver.find_element(By.CSS_SELECTOR, "#case-transfers tbody tr td.state").text
    step("the transfer's state in Chinese", first["state"] == "TRANSFER_STATE_CLOSED" and state_cell == "已办结",
         f"{first['state']} / {state_cell}")
    shot("03-case")
    no_console_errors()

    # Incidents are for administrators: the officer sees the API's refusal, in Chinese.
    driver.get(base + "/console/#/incidents")
    ready("incidents")
    err = text("error")
    step("a refused call is shown with its reason code", "无权执行此操作" in err and "ROLE_REQUIRED" in err, err)
    shot("04-incidents-refused")
    driver.get_log("browser")  # the 403 just provoked is logged by the browser; expected

    driver.find_element(By.ID, "logout").click()
    ready("login")
    token_left = driver.execute_script("return sessionStorage.length")
    step("logout clears the token", token_left == 0, str(token_left))

    # ---- administrator: incidents and the audit chain ------------------------------------------
    login(admin)
    driver.get(base + "/console/#/incidents")
    ready("incidents")
    _, inc = api("/v1/deliveryIncidents", admin,
                 {"states": ["DELIVERY_INCIDENT_STATE_OPEN", "DELIVERY_INCIDENT_STATE_RETRY_SCHEDULED"],
                  "pageSize": 100})
    api_inc = [i["name"] for i in inc.get("deliveryIncidents", [])]
    page_inc = [tr.get_attribute("data-incident")
                for tr in driver.find_elements(By.CSS_SELECTOR, "#incident-table tbody tr[data-incident]")]
    step("incidents as ListDeliveryIncidents answers", page_inc == api_inc and incident in api_inc,
         f"{page_inc} vs {api_inc}")
    shot("05-incidents")
    driver.find_element(By.CSS_SELECTOR, f"#incident-table tr[data-incident='{incident}'] button.retry").click()
    wait.until(lambda d: "已请求重试" in d.find_element(By.ID, "incident-message").text)
    state = ""
    for _ in range(100):
        _, lst = api("/v1/deliveryIncidents", admin,
                     {"states": ["DELIVERY_INCIDENT_STATE_RESOLVED"], "pageSize": 100})
        if incident in [i["name"] for i in lst.get("deliveryIncidents", [])]:
            state = "RESOLVED"
            break
        time.sleep(0.1)
    step("the retry button retried it: the incident is resolved", state == "RESOLVED",
         text("incident-message"))
    driver.find_element(By.ID, "incidents-resolved").click()
    ready("incidents")
    row = driver.find_element(By.CSS_SELECTOR, f"#incident-table tr[data-incident='{incident}']")
    step("the resolved incident shows as 已解决", "已解决" in row.text, row.text)
    shot("05b-incident-retried")
    driver.get(base + "/console/#/audit")
    ready("audit")
    _, audit = api("/v1/auditChain:verify", admin, method="POST", body={})
    shown_ok = driver.find_element(By.ID, "audit-ok").get_attribute("data-ok")
    step("audit chain status as VerifyAuditChain answers",
         shown_ok == ("true" if audit.get("ok") else "false") and audit.get("ok") is True
         and int(text("audit-checked")) > 0, f"{shown_ok} {text('audit-checked')} records")
    shot("06-audit")
    no_console_errors()

    # ---- a token the server refuses: back to the login page with the reason -------------------
    driver.execute_script(
        "sessionStorage.setItem('fengqiao.console.token', arguments[0])",
        "eyJhbGciOiJIUzI1NiJ9.eyJhZ2VuY3kiOiJhZ2VuY2llcy94aWdhbmctMTEwIiwic3ViIjoieCJ9.c2ln")
    driver.get(base + "/console/#/dashboard")
    ready("login")
    msg = text("login-message")
    step("401 goes back to login with the reason in Chinese",
         "未登录或令牌无效" in msg and "原因代码" in msg, msg)
    shot("07-refused-token")
finally:
    driver.quit()

print("console browser test: all checks passed", flush=True)
