// Texts of the page in Chinese (the default) and English; the choice is kept in localStorage.

const LANG_KEY = "scc.lang";

const zh = {
  "app.title": "智慧社区 · 告警与工单",
  "nav.inbox": "告警", "nav.board": "工单", "nav.community": "小区",
  "signout": "退出", loading: "加载中…", "error.network": "网络错误：无法连接网关",
  "signin.title": "登录", "signin.token": "API 令牌",
  "signin.help": "粘贴管理员发给您的 API 令牌（python -m gateway token create 生成）。令牌只保存在本标签页中，关闭即失效。",
  "signin.submit": "登录", "signin.empty": "请输入令牌", "signin.invalid": "令牌无效或已被撤销",
  "signin.expired": "令牌已失效，请重新登录",
  "live.open": "实时", "live.connecting": "连接中…", "live.closed": "已断开",
  "live.new_alert": "新告警：{title} · {device}",
  "role.admin": "管理员", "role.integrator": "集成商", "role.manager": "物业经理",
  "role.grid_member": "网格员", "role.read_only": "只读",
  "sev.critical": "紧急", "sev.major": "严重", "sev.warning": "警告", "sev.info": "提示",
  "state.open": "待派单", "state.dispatched": "已派单", "state.in_progress": "处理中",
  "state.resolved": "已办结", "state.closed": "已关闭",
  "kind.smoke": "烟感", "kind.throw_camera": "高空抛物", "kind.bin": "垃圾桶", "kind.manhole": "井盖",
  "source.sensor": "传感器", "source.manual": "人工上报",
  "category.fire": "消防", "category.safety": "安全", "category.public_safety": "公共安全",
  "category.urban_management": "城市管理", "category.sanitation": "环卫", "category.maintenance": "维修",
  "category.facility": "设施", "category.utilities": "市政", "category.manual": "报修",
  "sensor.fault": "传感器：仍报故障", "sensor.ok": "传感器：已恢复正常",
  "staffrole.street_officer": "街道干部", "staffrole.community_secretary": "社区书记",
  "staffrole.grid_head": "网格长", "staffrole.grid_member": "网格员",
  "staffrole.property_manager": "物业经理", "staffrole.building_head": "楼栋长", "staffrole.unit_head": "单元长",
  "time.now": "刚刚", "ago.s": "{n}秒前", "ago.m": "{n}分钟前", "ago.h": "{n}小时前", "ago.d": "{n}天前",
  "dur.dh": "{d}天{h}小时", "dur.hm": "{h}小时{m}分", "dur.ms": "{m}分{s}秒", "dur.s": "{s}秒",
  "sla.ack": "确认时限", "sla.resolve": "办结时限", "sla.left": "{what}剩余 {d}",
  "sla.overdue": "{what}已超时 {d}", "sla.late": "{what}已超时",
  "inbox.title": "告警收件箱", "inbox.empty": "暂无进行中的告警", "inbox.ack": "确认",
  "inbox.ack_done": "已确认告警", "inbox.acked": "已确认 · {who}", "inbox.unacked": "未确认",
  "inbox.order": "查看工单", "inbox.no_order": "该告警没有工单", "inbox.times": "触发 {n} 次",
  "board.title": "工单看板", "board.empty": "无", "board.more": "另有 {n} 条未显示",
  "board.overdue_only": "只看超时", "board.overdue_count": "超时 {n}",
  "order.back": "← 返回工单看板", "order.not_found": "工单 {id} 不存在或不在您的管辖范围内",
  "order.escalated": "已升级 {n} 级", "order.at": "位置 {place}", "order.owner": "负责 {node}",
  "order.source": "来源", "order.place": "位置", "order.owner_node": "负责节点", "order.assignee": "处理人",
  "order.device": "设备", "order.created": "创建时间", "order.deadlines": "时限", "order.sensor": "传感器",
  "order.normal_since": "自 {at} 起正常", "order.last_values": "最新读数", "order.rating": "评价",
  "order.occurrences": "发生记录", "order.none": "无", "order.trail": "处理记录",
  "order.override": "强制办结原因：{reason}", "order.photo": "照片",
  "order.read_only": "您的角色只能查看工单。",
  "audit.open": "创建工单", "audit.acknowledge": "确认", "audit.dispatch": "派单", "audit.start": "开始处理",
  "audit.resolve": "办结", "audit.close": "关闭", "audit.reopen": "重新打开", "audit.comment": "备注",
  "audit.rate": "评价", "audit.overdue": "超时", "audit.escalate": "升级",
  "audit.sensor_ok": "传感器恢复正常", "audit.sensor_fault": "传感器再次报警",
  "act.title": "处理", "act.assignee": "指派给", "act.pick": "选择处理人…", "act.pick_first": "请先选择处理人",
  "act.no_staff": "您的管辖范围内没有可指派的人员", "act.note": "说明", "act.note_hint": "处理说明（可选）",
  "act.photo": "照片链接", "act.dispatch": "派单", "act.start": "开始处理", "act.resolve": "办结",
  "act.close": "关闭工单", "act.reopen": "重新打开",
  "act.override": "强制办结", "act.reason": "强制办结原因", "act.reason_hint": "说明为何传感器仍报警也可办结",
  "act.override_help": "传感器仍在报警。请等待传感器恢复正常，或填写原因后强制办结（会记入处理记录）。",
  "act.comment_label": "备注", "act.comment_hint": "添加备注…", "act.comment": "添加备注",
  "act.rating": "评价", "act.rating_hint": "评价意见（可选）", "act.rate": "提交评价", "act.stars": "{n} 星",
  "done.dispatch": "已派单", "done.start": "已开始处理", "done.resolve": "已办结", "done.close": "工单已关闭",
  "done.reopen": "工单已重新打开", "done.comment": "已添加备注", "done.rate": "已提交评价",
  "chart.title": "事件前后的设备读数", "chart.incident": "事件", "chart.resolved": "办结",
  "chart.label": "{field} 读数，{n} 个点", "chart.no_points": "该时段没有读数",
  "chart.no_device": "人工工单没有设备读数", "chart.too_old": "事件已超过 7 天，读数不再显示",
  "chart.unavailable": "读数暂不可用（网关未连接时序数据库）", "chart.failed": "读数加载失败",
  "community.title": "{name} · 楼栋", "community.ok": "正常", "community.devices": "{n} 台设备",
  "community.no_buildings": "该小区没有楼栋", "community.no_compounds": "您的管辖范围内没有小区",
  "building.back": "← 返回楼栋", "building.all": "全部", "building.empty": "没有设备",
  "device.id": "设备", "device.kind": "类型", "device.place": "位置", "device.status": "状态",
  "device.battery": "电量", "device.seen": "最近上报",
  "device.online": "在线", "device.offline": "离线", "device.unknown": "未知", "device.decommissioned": "已停用",
};

const en = {
  "app.title": "Smart community · alerts & work orders",
  "nav.inbox": "Alerts", "nav.board": "Work orders", "nav.community": "Compound",
  "signout": "Sign out", loading: "Loading…", "error.network": "Network error: the gateway cannot be reached",
  "signin.title": "Sign in", "signin.token": "API token",
  "signin.help": "Paste the API token your administrator gave you (made with python -m gateway token create). It is kept in this tab only and forgotten when the tab closes.",
  "signin.submit": "Sign in", "signin.empty": "Enter a token", "signin.invalid": "The token is not valid or was revoked",
  "signin.expired": "Your token is no longer valid; sign in again",
  "live.open": "Live", "live.connecting": "Connecting…", "live.closed": "Disconnected",
  "live.new_alert": "New alert: {title} · {device}",
  "role.admin": "Admin", "role.integrator": "Integrator", "role.manager": "Manager",
  "role.grid_member": "Grid member", "role.read_only": "Read only",
  "sev.critical": "Critical", "sev.major": "Major", "sev.warning": "Warning", "sev.info": "Info",
  "state.open": "Open", "state.dispatched": "Dispatched", "state.in_progress": "In progress",
  "state.resolved": "Resolved", "state.closed": "Closed",
  "kind.smoke": "Smoke", "kind.throw_camera": "Throw camera", "kind.bin": "Bin", "kind.manhole": "Manhole",
  "source.sensor": "Sensor", "source.manual": "Reported",
  "category.fire": "Fire", "category.safety": "Safety", "category.public_safety": "Public safety",
  "category.urban_management": "Urban management", "category.sanitation": "Sanitation",
  "category.maintenance": "Maintenance", "category.facility": "Facility", "category.utilities": "Utilities",
  "category.manual": "Repair",
  "sensor.fault": "Sensor: still reports the fault", "sensor.ok": "Sensor: back to normal",
  "staffrole.street_officer": "Street officer", "staffrole.community_secretary": "Community secretary",
  "staffrole.grid_head": "Grid head", "staffrole.grid_member": "Grid member",
  "staffrole.property_manager": "Property manager", "staffrole.building_head": "Building head",
  "staffrole.unit_head": "Unit head",
  "time.now": "just now", "ago.s": "{n} s ago", "ago.m": "{n} min ago", "ago.h": "{n} h ago",
  "ago.d": "{n} d ago",
  "dur.dh": "{d} d {h} h", "dur.hm": "{h} h {m} min", "dur.ms": "{m} min {s} s", "dur.s": "{s} s",
  "sla.ack": "Ack due", "sla.resolve": "Resolve due", "sla.left": "{what} in {d}",
  "sla.overdue": "{what}: overdue by {d}", "sla.late": "{what}: overdue",
  "inbox.title": "Alert inbox", "inbox.empty": "No firing alerts", "inbox.ack": "Acknowledge",
  "inbox.ack_done": "Alert acknowledged", "inbox.acked": "Acknowledged · {who}", "inbox.unacked": "Not acknowledged",
  "inbox.order": "Work order", "inbox.no_order": "This alert has no work order", "inbox.times": "{n} times",
  "board.title": "Work-order board", "board.empty": "None", "board.more": "{n} more not shown",
  "board.overdue_only": "Overdue only", "board.overdue_count": "{n} overdue",
  "order.back": "← Back to the board", "order.not_found": "Work order {id} does not exist or is outside your area",
  "order.escalated": "escalated ×{n}", "order.at": "at {place}", "order.owner": "owner {node}",
  "order.source": "Source", "order.place": "Place", "order.owner_node": "Owner", "order.assignee": "Assignee",
  "order.device": "Device", "order.created": "Created", "order.deadlines": "Deadline", "order.sensor": "Sensor",
  "order.normal_since": "normal since {at}", "order.last_values": "Last reading", "order.rating": "Rating",
  "order.occurrences": "Occurrences", "order.none": "None", "order.trail": "Audit trail",
  "order.override": "Override reason: {reason}", "order.photo": "photo",
  "order.read_only": "Your role may only read work orders.",
  "audit.open": "opened", "audit.acknowledge": "acknowledged", "audit.dispatch": "dispatched",
  "audit.start": "started", "audit.resolve": "resolved", "audit.close": "closed", "audit.reopen": "reopened",
  "audit.comment": "commented", "audit.rate": "rated", "audit.overdue": "overdue", "audit.escalate": "escalated",
  "audit.sensor_ok": "sensor back to normal", "audit.sensor_fault": "sensor reports the fault again",
  "act.title": "Actions", "act.assignee": "Assign to", "act.pick": "Choose a person…",
  "act.pick_first": "Choose who to dispatch to first",
  "act.no_staff": "Nobody inside your area can be assigned", "act.note": "Note",
  "act.note_hint": "What was done (optional)", "act.photo": "Photo URL", "act.dispatch": "Dispatch",
  "act.start": "Start", "act.resolve": "Resolve", "act.close": "Close", "act.reopen": "Reopen",
  "act.override": "Override and resolve", "act.reason": "Override reason",
  "act.reason_hint": "Why resolve while the sensor still alarms",
  "act.override_help": "The sensor still reports the fault. Wait until it reads normal, or give a reason to resolve anyway (it goes into the audit trail).",
  "act.comment_label": "Comment", "act.comment_hint": "Add a comment…", "act.comment": "Add comment",
  "act.rating": "Rating", "act.rating_hint": "Comment on the result (optional)", "act.rate": "Rate",
  "act.stars": "{n} stars",
  "done.dispatch": "Dispatched", "done.start": "Started", "done.resolve": "Resolved", "done.close": "Closed",
  "done.reopen": "Reopened", "done.comment": "Comment added", "done.rate": "Rating saved",
  "chart.title": "Device readings around the incident", "chart.incident": "incident", "chart.resolved": "resolved",
  "chart.label": "{field} readings, {n} points", "chart.no_points": "No readings in this period",
  "chart.no_device": "A reported order has no device readings",
  "chart.too_old": "The incident is more than 7 days old; readings are no longer shown",
  "chart.unavailable": "Readings are not available (the gateway has no time-series store)",
  "chart.failed": "Readings could not be loaded",
  "community.title": "{name} · buildings", "community.ok": "OK", "community.devices": "{n} devices",
  "community.no_buildings": "This compound has no buildings",
  "community.no_compounds": "There is no compound inside your area",
  "building.back": "← Back to the buildings", "building.all": "All", "building.empty": "No devices",
  "device.id": "Device", "device.kind": "Kind", "device.place": "Place", "device.status": "Status",
  "device.battery": "Battery", "device.seen": "Last seen",
  "device.online": "online", "device.offline": "offline", "device.unknown": "unknown",
  "device.decommissioned": "decommissioned",
};

const DICT = { zh, en };

function stored() {
  try {
    return localStorage.getItem(LANG_KEY);
  } catch (err) {
    return null;
  }
}

let lang = DICT[stored()] ? stored() : "zh";

/** The current language: "zh" or "en". */
export function getLang() {
  return lang;
}

/** Switch language and remember it. */
export function setLang(next) {
  lang = DICT[next] ? next : "zh";
  try {
    localStorage.setItem(LANG_KEY, lang);
  } catch (err) {
    // private mode: the choice lasts for this page only
  }
}

/**
 * The text of `key` with {name} placeholders filled from `vars`; `fallback` (else the key)
 * when neither language has it.
 */
export function t(key, vars = {}, fallback = undefined) {
  const text = DICT[lang][key] ?? zh[key] ?? fallback ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

/** Fill every [data-i18n] element under `root` and set the document language. */
export function applyStatic(root) {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = t("app.title");
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
}
