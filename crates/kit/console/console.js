// Fengqiao web console: a client of the suite's JSON gateway on the same origin.
//
// Every data call is a `/v1/...` request with `Authorization: Bearer <token>`; the server
// decides what the viewer may see (the page only hides buttons the viewer's roles could not
// use). API values are rendered as text (never as HTML) and as the API returns them: the
// console unmasks nothing. The token lives in sessionStorage and nowhere else.
"use strict";

(function () {
  const TOKEN_KEY = "fengqiao.console.token";

  // ---- labels (Chinese interface text) ----------------------------------------------------

  const TRANSFER_STATE = {
    TRANSFER_STATE_UNSPECIFIED: "未知",
    TRANSFER_STATE_DRAFT: "草稿",
    TRANSFER_STATE_AWAITING_APPROVAL: "待审批",
    TRANSFER_STATE_APPROVED: "已审批待送达",
    TRANSFER_STATE_DELIVERED: "已送达待受理",
    TRANSFER_STATE_DECLINED: "不予受理",
    TRANSFER_STATE_IN_PROGRESS: "办理中",
    TRANSFER_STATE_FEEDBACK_SUBMITTED: "已反馈待确认",
    TRANSFER_STATE_CLOSED: "已办结",
    TRANSFER_STATE_WITHDRAWN: "已撤回",
    TRANSFER_STATE_EXPIRED: "逾期退回",
    TRANSFER_STATE_RETURNED: "已退回",
    TRANSFER_STATE_ESCALATED: "已上报",
  };
  // Not yet ended: the states a case is still being worked on in (在办).
  const OPEN_STATES = [
    "TRANSFER_STATE_DRAFT",
    "TRANSFER_STATE_AWAITING_APPROVAL",
    "TRANSFER_STATE_APPROVED",
    "TRANSFER_STATE_DELIVERED",
    "TRANSFER_STATE_IN_PROGRESS",
    "TRANSFER_STATE_FEEDBACK_SUBMITTED",
  ];
  const CATEGORY = {
    DISPUTE_CATEGORY_UNSPECIFIED: "未分类",
    DISPUTE_CATEGORY_NEIGHBOURHOOD: "邻里纠纷",
    DISPUTE_CATEGORY_MARRIAGE_FAMILY: "婚姻家庭",
    DISPUTE_CATEGORY_LABOUR_WAGES: "劳动争议与欠薪",
    DISPUTE_CATEGORY_PROPERTY_MANAGEMENT: "物业纠纷",
    DISPUTE_CATEGORY_TRAFFIC_ACCIDENT: "交通事故",
    DISPUTE_CATEGORY_CONTRACT_DEBT: "合同与债务",
    DISPUTE_CATEGORY_LAND_HOUSING: "土地与房屋",
    DISPUTE_CATEGORY_MEDICAL: "医疗纠纷",
    DISPUTE_CATEGORY_CONSUMER: "消费纠纷",
    DISPUTE_CATEGORY_DAMAGE_COMPENSATION: "损害赔偿",
    DISPUTE_CATEGORY_ADMINISTRATIVE: "行政争议",
    DISPUTE_CATEGORY_OTHER: "其他",
  };
  const EVENT_TYPE = {
    TRANSFER_EVENT_TYPE_CREATED: "起草",
    TRANSFER_EVENT_TYPE_UPDATED: "修改",
    TRANSFER_EVENT_TYPE_SUBMITTED: "提交审批",
    TRANSFER_EVENT_TYPE_STEP_APPROVED: "审批通过",
    TRANSFER_EVENT_TYPE_REJECTED: "审批退回",
    TRANSFER_EVENT_TYPE_APPROVED: "审批完成",
    TRANSFER_EVENT_TYPE_DELIVERED: "送达",
    TRANSFER_EVENT_TYPE_WITHDRAWN: "撤回",
    TRANSFER_EVENT_TYPE_ACCEPTED: "受理",
    TRANSFER_EVENT_TYPE_DECLINED: "不予受理",
    TRANSFER_EVENT_TYPE_CLOCK_PAUSED: "中止计时",
    TRANSFER_EVENT_TYPE_CLOCK_RESUMED: "恢复计时",
    TRANSFER_EVENT_TYPE_DEADLINE_EXTENDED: "延长期限",
    TRANSFER_EVENT_TYPE_INVESTIGATION_REQUESTED: "请求补充调查",
    TRANSFER_EVENT_TYPE_INVESTIGATION_ANSWERED: "答复补充调查",
    TRANSFER_EVENT_TYPE_FEEDBACK_SUBMITTED: "反馈",
    TRANSFER_EVENT_TYPE_FEEDBACK_ACKNOWLEDGED: "办结",
    TRANSFER_EVENT_TYPE_DEADLINE_MISSED: "逾期提醒",
    TRANSFER_EVENT_TYPE_EXPIRED: "逾期退回",
    TRANSFER_EVENT_TYPE_RETURNED: "退回",
    TRANSFER_EVENT_TYPE_ESCALATED: "上报",
    TRANSFER_EVENT_TYPE_CLOCK_COMPLETED: "时限完成",
  };
  const INCIDENT_STATE = {
    DELIVERY_INCIDENT_STATE_OPEN: "待处理",
    DELIVERY_INCIDENT_STATE_RETRY_SCHEDULED: "已排定重试",
    DELIVERY_INCIDENT_STATE_RESOLVED: "已解决",
  };
  const MESSAGE_KIND = {
    MESSAGE_KIND_TRANSFER_OFFERED: "移送送达",
    MESSAGE_KIND_TRANSFER_WITHDRAWN: "移送撤回",
    MESSAGE_KIND_TRANSFER_DECLINED: "不予受理",
    MESSAGE_KIND_TRANSFER_ACCEPTED: "受理",
    MESSAGE_KIND_CLOCK_PAUSED: "中止计时",
    MESSAGE_KIND_CLOCK_RESUMED: "恢复计时",
    MESSAGE_KIND_DEADLINE_EXTENDED: "延长期限",
    MESSAGE_KIND_INVESTIGATION_REQUESTED: "请求补充调查",
    MESSAGE_KIND_INVESTIGATION_ANSWERED: "答复补充调查",
    MESSAGE_KIND_FEEDBACK: "反馈",
    MESSAGE_KIND_FEEDBACK_ACKNOWLEDGED: "反馈确认",
    MESSAGE_KIND_TRANSFER_EXPIRED: "逾期退回",
    MESSAGE_KIND_TRANSFER_RETURNED: "退回",
    MESSAGE_KIND_TRANSFER_ESCALATED: "上报",
    MESSAGE_KIND_APPROVAL_REQUIRED: "待审批",
    MESSAGE_KIND_TRANSFER_REJECTED: "审批退回",
    MESSAGE_KIND_DEADLINE_APPROACHING: "临近到期",
    MESSAGE_KIND_DEADLINE_MISSED: "逾期",
  };
  const ROLE = {
    platform_admin: "平台管理员",
    auditor: "审计员",
    statistician: "统计员",
    dispatcher: "接处警系统",
    command_room_reviewer: "指挥室审核员",
    officer: "民警",
    duty_chief: "值班所长",
    mediation_admin: "调解组织管理员",
    mediator: "调解员",
    judge: "法官",
    court_clerk: "书记员",
    court_admin: "法院管理员",
    court_president: "院长",
    prosecutor: "检察官",
    department_head: "部门负责人",
    coordinator: "协调员",
    organ_liaison: "行政机关联络员",
    review_officer: "复议工作人员",
    review_head: "复议机构负责人",
  };
  const OUTCOME = {
    agreement_reached: "达成调解协议",
    no_agreement: "未达成协议",
    withdrawn: "撤回",
  };
  const CLOCK = { acceptance: "受理期限", feedback: "反馈期限" };
  // gRPC codes (google.rpc.Code) in Chinese.
  const CODE = {
    1: "请求已取消",
    2: "未知错误",
    3: "请求参数无效",
    4: "请求超时",
    5: "未找到，或本机构无权查看",
    6: "已存在",
    7: "无权执行此操作",
    8: "请求过于频繁或过大",
    9: "当前状态不允许此操作",
    10: "操作冲突，请刷新后重试",
    11: "超出范围",
    12: "尚未实现",
    13: "服务器内部错误",
    14: "服务暂不可用",
    15: "数据损坏",
    16: "未登录或令牌无效",
  };

  const label = (map, v) => (v && map[v]) || (v ? String(v) : "—");
  const agencyId = (name) => (name || "").replace(/^agencies\//, "");
  const num = (v) => Number(v || 0);

  // ---- DOM helpers (text only) ------------------------------------------------------------

  const $ = (id) => document.getElementById(id);
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") e.className = v;
      else if (k === "dataset") Object.assign(e.dataset, v);
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  function fill(tableId, rows, emptyText, columns) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren();
    if (rows.length === 0) {
      body.append(el("tr", { class: "empty" }, el("td", { colspan: String(columns) }, emptyText)));
      return;
    }
    for (const r of rows) body.append(r);
  }
  function td(v, cls) {
    return el("td", cls ? { class: cls } : {}, v);
  }
  function caseLink(caseId) {
    if (!caseId) return "—";
    return el("a", { href: "#/case/" + encodeURIComponent(caseId), class: "case-link", dataset: { caseId } }, caseId);
  }
  const TZ = "Asia/Shanghai";
  function when(ts) {
    if (!ts) return "—";
    const d = new Date(ts);
    if (isNaN(d)) return ts;
    return d.toLocaleString("zh-CN", { timeZone: TZ, hour12: false });
  }

  // ---- token and identity -----------------------------------------------------------------

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  // The JWT's payload, for display only: the server checks the signature and decides access.
  function claims(t) {
    try {
      const part = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const bin = atob(part + "=".repeat((4 - (part.length % 4)) % 4));
      const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (_) {
      return null;
    }
  }
  const roles = () => (claims(token()) || {}).roles || [];
  const isAdmin = () => roles().includes("platform_admin");

  function logout(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    destroyCharts();
    $("login-message").textContent = message || "";
    if (location.hash !== "#/login") location.hash = "#/login";
    else render();
  }

  // ---- the API ----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(httpStatus, status) {
      const s = status || {};
      const info = (s.details || []).find((d) => (d["@type"] || "").endsWith("google.rpc.ErrorInfo"));
      const code = typeof s.code === "number" ? s.code : 0;
      const reason = info ? info.reason : "";
      super(
        "请求失败：" + (CODE[code] || "HTTP " + httpStatus) +
          (reason ? "（原因代码 " + reason + "）" : "") +
          (s.message ? "\n服务器说明：" + s.message : "")
      );
      this.httpStatus = httpStatus;
      this.code = code;
      this.reason = reason;
    }
  }

  async function api(method, path, params, body) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
      else if (v !== undefined && v !== null && v !== "") q.append(k, v);
    }
    const qs = q.toString();
    const headers = { Authorization: "Bearer " + token(), Accept: "application/json" };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(path + (qs ? "?" + qs : ""), init);
    } catch (e) {
      throw new ApiError(0, { code: 14, message: "无法连接服务器" });
    }
    let j = null;
    try {
      j = await r.json();
    } catch (_) {
      j = null;
    }
    if (r.ok) return j || {};
    const err = new ApiError(r.status, j);
    if (r.status === 401) logout(err.message);
    throw err;
  }

  // Every page of a list (at most `maxPages`).
  async function listAll(path, params, key, maxPages) {
    let items = [];
    let pageToken = "";
    for (let i = 0; i < (maxPages || 10); i++) {
      const a = await api("GET", path, Object.assign({}, params, { pageToken }));
      items = items.concat(a[key] || []);
      pageToken = a.nextPageToken || "";
      if (!pageToken) break;
    }
    return items;
  }

  function uuid() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  function showError(e) {
    const box = $("error");
    box.textContent = e instanceof ApiError ? e.message : "页面错误：" + e;
    box.hidden = false;
  }

  // ---- charts ------------------------------------------------------------------------------

  let charts = [];
  function destroyCharts() {
    charts.forEach((c) => c.destroy());
    charts = [];
  }
  function chart(canvasId, config) {
    if (typeof Chart === "undefined") return;
    config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options || {});
    charts.push(new Chart($(canvasId), config));
  }
  const COLORS = ["#a3192f", "#2f6db5", "#1e7b34", "#d08a1b", "#6b4fa3", "#2a9d8f", "#7a7a7a", "#c2185b", "#5d4037", "#0097a7", "#9e9d24", "#455a64"];

  // ---- views ------------------------------------------------------------------------------

  // The statistics window: the 365 days before the start of tomorrow (China Standard Time).
  function statsWindow() {
    const now = new Date();
    const cst = new Date(now.getTime() + 8 * 3600 * 1000);
    const tomorrow = Date.UTC(cst.getUTCFullYear(), cst.getUTCMonth(), cst.getUTCDate() + 1) - 8 * 3600 * 1000;
    const end = new Date(tomorrow);
    const start = new Date(tomorrow - 365 * 24 * 3600 * 1000);
    return { startTime: start.toISOString(), endTime: end.toISOString() };
  }
  const stats = (extra) =>
    api("GET", "/v1/transferStatistics", Object.assign(statsWindow(), extra));

  function transferRow(t, cells) {
    const caseId = (t.caseSnapshot || {}).caseId;
    return el("tr", { dataset: { transfer: t.name || "" } }, ...cells(t, caseId));
  }

  // The clocks of a transfer still running: (label, clock).
  function runningClocks(t) {
    const out = [];
    if (t.acceptanceClock) out.push([CLOCK.acceptance, t.acceptanceClock]);
    if (t.feedbackClock) out.push([CLOCK.feedback, t.feedbackClock]);
    for (const c of t.clocks || []) if (c.state) out.push([CLOCK[c.name] || c.name, c.state]);
    return out.filter(([, c]) => c.dueAt && !c.stoppedAt && !c.expired && !c.paused);
  }

  async function viewDashboard() {
    const me = claims(token()) || {};
    $("dash-agency").textContent = agencyId(me.agency);
    const w = statsWindow();
    $("dash-window").textContent = when(w.startTime) + " 至 " + when(w.endTime);

    const [byState, total, byMonth, hot, overdue, active, recent] = await Promise.all([
      stats({ groupBy: ["STATISTICS_DIMENSION_STATE"] }),
      stats({}),
      stats({ groupBy: ["STATISTICS_DIMENSION_PERIOD"], period: "STATISTICS_PERIOD_MONTH" }),
      stats({ groupBy: ["STATISTICS_DIMENSION_REGION", "STATISTICS_DIMENSION_CATEGORY"], regionLevel: "REGION_LEVEL_COUNTY" }),
      listAll("/v1/transfers", { overdueOnly: true, pageSize: 100 }, "transfers", 5),
      listAll("/v1/transfers", { states: OPEN_STATES, pageSize: 100 }, "transfers", 5),
      api("GET", "/v1/transfers", { pageSize: 20 }),
    ]);
    $("dash-computed").textContent = when(byState.computeTime);

    // State distribution.
    const stateRows = (byState.rows || [])
      .map((r) => ({ state: r.state || "TRANSFER_STATE_UNSPECIFIED", count: num(r.transferCount) }))
      .sort((a, b) => b.count - a.count);
    fill(
      "state-table",
      stateRows.map((r) =>
        el("tr", { dataset: { state: r.state } }, td(label(TRANSFER_STATE, r.state)), td(r.count, "num count"))
      ),
      "区间内没有移送",
      2
    );
    const totalRow = (total.rows || [])[0] || {};
    $("total-transfers").textContent = num(totalRow.transferCount);
    $("open-count").textContent = stateRows.filter((r) => OPEN_STATES.includes(r.state)).reduce((s, r) => s + r.count, 0);
    $("closed-count").textContent = stateRows.filter((r) => r.state === "TRANSFER_STATE_CLOSED").reduce((s, r) => s + r.count, 0);
    chart("chart-states", {
      type: "bar",
      data: {
        labels: stateRows.map((r) => label(TRANSFER_STATE, r.state)),
        datasets: [{ label: "件数", data: stateRows.map((r) => r.count), backgroundColor: stateRows.map((r) => (OPEN_STATES.includes(r.state) ? COLORS[1] : COLORS[6])) }],
      },
      options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });

    // Outcomes over time, and their distribution.
    const months = (byMonth.rows || []).slice().sort((a, b) => (a.periodStart || "").localeCompare(b.periodStart || ""));
    const monthLabel = (r) => {
      const d = new Date(r.periodStart);
      return isNaN(d) ? "—" : d.toLocaleDateString("zh-CN", { timeZone: TZ, year: "numeric", month: "long" });
    };
    const series = [
      ["移送", "transferCount"],
      ["受理", "acceptedCount"],
      ["办结", "closedCount"],
      ["不予受理", "declinedCount"],
      ["逾期", (r) => num(r.overdueAcceptanceCount) + num(r.overdueFeedbackCount)],
    ];
    chart("chart-trend", {
      type: "line",
      data: {
        labels: months.map(monthLabel),
        datasets: series.map(([name, f], i) => ({
          label: name,
          data: months.map((r) => (typeof f === "function" ? f(r) : num(r[f]))),
          borderColor: COLORS[i],
          backgroundColor: COLORS[i],
        })),
      },
      options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
    const outcomes = (totalRow.outcomeCounts || []).map((o) => ({ code: o.outcomeCode, count: num(o.count) }));
    fill(
      "outcome-table",
      outcomes.map((o) => el("tr", { dataset: { outcome: o.code } }, td(label(OUTCOME, o.code)), td(o.count, "num count"))),
      "区间内还没有办理结果",
      2
    );

    // Hotspots by region and category.
    const hotRows = (hot.rows || [])
      .map((r) => ({ region: r.regionCode || "", category: r.category || "DISPUTE_CATEGORY_UNSPECIFIED", count: num(r.transferCount) }))
      .sort((a, b) => b.count - a.count);
    fill(
      "hotspot-table",
      hotRows.map((r) => el("tr", { dataset: { region: r.region, category: r.category } }, td(r.region || "—"), td(label(CATEGORY, r.category)), td(r.count, "num count"))),
      "区间内没有移送",
      3
    );
    const byCategory = {};
    hotRows.forEach((r) => (byCategory[r.category] = (byCategory[r.category] || 0) + r.count));
    const cats = Object.entries(byCategory).sort((a, b) => b[1] - a[1]).slice(0, 10);
    chart("chart-hotspots", {
      type: "bar",
      data: {
        labels: cats.map(([c]) => label(CATEGORY, c)),
        datasets: [{ label: "件数", data: cats.map(([, n]) => n), backgroundColor: COLORS[0] }],
      },
      options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
    });

    // Overdue and near-due deadlines.
    $("overdue-count").textContent = overdue.length;
    fill(
      "overdue-table",
      overdue.map((t) =>
        transferRow(t, (t, caseId) => {
          const expired = [[CLOCK.acceptance, t.acceptanceClock], [CLOCK.feedback, t.feedbackClock]]
            .concat((t.clocks || []).map((c) => [CLOCK[c.name] || c.name, c.state]))
            .filter(([, c]) => c && c.expired)
            .map(([n, c]) => n + "（" + when(c.dueAt) + "）");
          return [td(t.name), td(caseLink(caseId)), td(label(TRANSFER_STATE, t.state)), td(agencyId((t.fromAgency || {}).name)), td(agencyId((t.toAgency || {}).name)), td(expired.join("；") || "—")];
        })
      ),
      "没有逾期的移送",
      6
    );
    const horizon = Date.now() + 3 * 24 * 3600 * 1000;
    const near = [];
    for (const t of active) {
      for (const [n, c] of runningClocks(t)) {
        const due = new Date(c.dueAt).getTime();
        if (due <= horizon) near.push({ t, n, c, due });
      }
    }
    near.sort((a, b) => a.due - b.due);
    $("neardue-count").textContent = near.length;
    fill(
      "neardue-table",
      near.map(({ t, n, c }) => transferRow(t, (t, caseId) => [td(t.name), td(caseLink(caseId)), td(label(TRANSFER_STATE, t.state)), td(n), td(when(c.dueAt))])),
      "三日内没有到期的时限",
      5
    );

    // Recent transfers, each linking to its case page.
    fill(
      "recent-table",
      (recent.transfers || []).map((t) =>
        transferRow(t, (t, caseId) => [
          td(t.name),
          td(caseLink(caseId)),
          td((t.route || "").replace(/^routes\//, "")),
          td(agencyId((t.fromAgency || {}).name)),
          td(agencyId((t.toAgency || {}).name)),
          td(label(TRANSFER_STATE, t.state), "state"),
          td(when(t.updateTime)),
        ])
      ),
      "没有移送",
      7
    );
  }

  async function viewCase(caseId) {
    $("case-id").textContent = caseId;
    const events = [];
    let transfers = [];
    let pageToken = "";
    for (let i = 0; i < 20; i++) {
      const a = await api("GET", "/v1/caseTimeline", { caseId, pageSize: 200, pageToken });
      events.push(...(a.events || []));
      if (i === 0) transfers = a.transfers || [];
      pageToken = a.nextPageToken || "";
      if (!pageToken) break;
    }
    const details = await Promise.all(
      transfers.map((name) => api("GET", "/v1/" + name).then((a) => a.transfer || { name }, () => ({ name })))
    );
    fill(
      "case-transfers",
      details.map((t) =>
        el("tr", { dataset: { transfer: t.name } },
          td(t.name),
          td((t.route || "").replace(/^routes\//, "")),
          td(agencyId((t.fromAgency || {}).name)),
          td(agencyId((t.toAgency || {}).name)),
          td(label(TRANSFER_STATE, t.state), "state"),
          td(t.overdue ? "是" : "否"))
      ),
      "本机构没有参与这个案件的移送",
      6
    );
    fill(
      "timeline-table",
      events.map((e) => {
        const a = e.actor || {};
        const change = e.fromState || e.toState ? label(TRANSFER_STATE, e.fromState) + " → " + label(TRANSFER_STATE, e.toState) : "—";
        return el("tr", { dataset: { sequence: e.sequence || "", event: e.eventType || "" } },
          td(e.sequence || "—"),
          td(when(e.occurredAt)),
          td(e.transfer || "—"),
          td(label(EVENT_TYPE, e.eventType)),
          td(change),
          td(agencyId(a.agency)),
          td(a.displayName || a.actorId || "—"),
          td([e.reasonCode, e.reason].filter(Boolean).join("：") || "—"));
      }),
      "没有事件",
      8
    );
  }

  async function viewIncidents() {
    const states = ["DELIVERY_INCIDENT_STATE_OPEN", "DELIVERY_INCIDENT_STATE_RETRY_SCHEDULED"];
    if ($("incidents-resolved").checked) states.push("DELIVERY_INCIDENT_STATE_RESOLVED");
    const items = await listAll("/v1/deliveryIncidents", { states, pageSize: 100 }, "deliveryIncidents", 5);
    const admin = isAdmin();
    fill(
      "incident-table",
      items.map((i) => {
        const retry = admin && i.state !== "DELIVERY_INCIDENT_STATE_RESOLVED"
          ? el("button", { type: "button", class: "retry", onclick: () => retryIncident(i.name) }, "立即重试")
          : "—";
        return el("tr", { dataset: { incident: i.name } },
          td(i.name),
          td(label(INCIDENT_STATE, i.state)),
          td(agencyId(i.toAgency)),
          td(label(MESSAGE_KIND, i.kind)),
          td(num(i.attemptCount), "num"),
          td([i.lastErrorCode, i.lastErrorMessage].filter(Boolean).join("：") || "—", "wrap"),
          td(when(i.lastFailureTime)),
          td(when(i.nextAttemptTime)),
          td(retry));
      }),
      "没有投递异常",
      9
    );
  }

  async function retryIncident(name) {
    $("incident-message").textContent = "";
    try {
      const a = await api("POST", "/v1/" + name + ":retry", null, { requestId: uuid() });
      const i = a.deliveryIncident || {};
      $("incident-message").textContent = "已请求重试：" + name + "，当前状态：" + label(INCIDENT_STATE, i.state);
      await viewIncidents();
    } catch (e) {
      showError(e);
    }
  }

  async function viewAudit() {
    ["audit-ok", "audit-checked", "audit-last-seq", "audit-last-hash", "audit-broken", "audit-detail", "audit-time"].forEach((id) => ($(id).textContent = "…"));
    const a = await api("POST", "/v1/auditChain:verify", null, {});
    const ok = $("audit-ok");
    ok.textContent = a.ok ? "完整，未发现断点" : "发现断点";
    ok.className = a.ok ? "ok" : "bad";
    ok.dataset.ok = a.ok ? "true" : "false";
    $("audit-checked").textContent = num(a.recordsChecked);
    $("audit-last-seq").textContent = num(a.lastSequence);
    $("audit-last-hash").textContent = a.lastHash || "—";
    $("audit-broken").textContent = a.firstBrokenSequence !== undefined ? "序号 " + a.firstBrokenSequence : "无";
    $("audit-detail").textContent = a.detail || "—";
    $("audit-time").textContent = when(new Date().toISOString());
  }

  // ---- routing ----------------------------------------------------------------------------

  const VIEWS = ["login", "dashboard", "case", "incidents", "audit"];
  let generation = 0;

  async function render() {
    const gen = ++generation;
    document.body.dataset.ready = "";
    $("error").hidden = true;
    destroyCharts();
    let [, view, arg] = (location.hash || "").match(/^#\/([a-z]+)\/?(.*)$/) || [];
    if (!token()) view = "login";
    else if (!VIEWS.includes(view) || view === "login") view = "dashboard";
    for (const v of VIEWS) $("view-" + v).hidden = v !== view;
    $("bar").hidden = view === "login";
    document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.id === "nav-" + view));
    if (view !== "login") {
      const me = claims(token()) || {};
      $("whoami").textContent =
        "机构：" + agencyId(me.agency) + " · 人员：" + (me.sub || "—") + " · 角色：" +
        ((me.roles || []).map((r) => ROLE[r] || r).join("、") || "无");
    }
    try {
      if (view === "dashboard") await viewDashboard();
      else if (view === "case") await viewCase(decodeURIComponent(arg || ""));
      else if (view === "incidents") await viewIncidents();
      else if (view === "audit") await viewAudit();
    } catch (e) {
      if (gen === generation) showError(e);
    }
    if (gen === generation) document.body.dataset.ready = view;
  }

  async function login(ev) {
    ev.preventDefault();
    const t = $("token-input").value.trim().replace(/^Bearer\s+/i, "");
    const me = claims(t);
    if (!me || !me.agency) {
      $("login-message").textContent = "这不是有效的访问令牌（无法读出机构）。";
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, t);
    // One cheap call checks the token with the server before showing anything.
    try {
      await api("GET", "/v1/" + me.agency);
    } catch (e) {
      if (e.httpStatus !== 401) {
        // The token is good; the agency lookup itself failed (shown, not fatal).
        showError(e);
      }
      if (!token()) return;
    }
    $("token-input").value = "";
    $("login-message").textContent = "";
    if (location.hash !== "#/dashboard") location.hash = "#/dashboard";
    else render();
  }

  function start() {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", () => logout("已退出登录。"));
    $("incidents-resolved").addEventListener("change", render);
    $("audit-verify").addEventListener("click", render);
    $("case-search").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const id = $("case-search-input").value.trim();
      if (id) location.hash = "#/case/" + encodeURIComponent(id);
    });
    window.addEventListener("hashchange", render);
    render();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
