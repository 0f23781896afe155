// Community view: the buildings of a compound as tiles coloured by their worst open alert.
import { api, seg, withQuery } from "./api.js";
import { buildingView } from "./building.js";
import { debounce, h, note, put } from "./dom.js";
import { t } from "./i18n.js";
import { SEVERITIES } from "./inbox.js";

/** Colour classes of the tiles, worst first ("info" alerts colour nothing). */
export const TILE_LEVELS = ["critical", "major", "warning"];

/** Nodes of `tree` (itself included) at `level`, in tree order. */
export function nodesAt(tree, level) {
  const found = [];
  const walk = (node) => {
    if (node.level === level) found.push(node);
    for (const child of node.children || []) walk(child);
  };
  walk(tree);
  return found;
}

/** Firing-alert counts by severity for each building code, from alerts under a compound. */
export function countsByBuilding(alerts, buildings) {
  const counts = new Map(buildings.map((b) => [b.code, {}]));
  for (const alert of alerts) {
    const code = (alert.path || []).find((c) => counts.has(c));
    if (code) counts.get(code)[alert.severity] = (counts.get(code)[alert.severity] || 0) + 1;
  }
  return counts;
}

/** The worst tile level of a count map, or "none". */
export function worstOf(count) {
  return TILE_LEVELS.find((sev) => count[sev]) || "none";
}

function tile(compound, building, count, devices) {
  const worst = worstOf(count);
  const parts = SEVERITIES.filter((sev) => count[sev]).map((sev) => `${t(`sev.${sev}`)} ${count[sev]}`);
  return h("a", {
    href: `#/community/${seg(compound.code)}/${seg(building.code)}`,
    class: `tile worst-${worst}`,
    dataset: { building: building.code, worst },
  },
  h("span", { class: "tile-name", text: building.name }),
  h("span", { class: "tile-code", text: building.code }),
  h("span", { class: "tile-alerts", text: parts.length ? parts.join(" · ") : t("community.ok") }),
  h("span", { class: "tile-devices", text: devices === null ? "" : t("community.devices", { n: devices }) }),
  );
}

function legend() {
  const levels = ["none", ...[...TILE_LEVELS].reverse()];
  const label = (level) => (level === "none" ? t("community.ok") : t(`sev.${level}`));
  return h("p", { class: "legend" },
    levels.map((level) => h("span", { class: `key worst-${level}`, text: label(level) })));
}

async function deviceTotal(code) {
  try {
    return (await api(withQuery("/devices", { node: code, limit: 1 }))).total;
  } catch (err) {
    return null;
  }
}

function tilesView(ctx, tree, compoundCode) {
  const compounds = nodesAt(tree, "compound");
  const compound = compounds.find((c) => c.code === compoundCode) || compounds[0];
  const grid = h("div", { class: "tiles" }, h("p", { class: "loading", text: t("loading") }));
  const chips = compounds.length > 1 ? h("nav", { class: "chips" }, compounds.map((c) => h("a", {
    href: `#/community/${seg(c.code)}`, class: `chip${c === compound ? " on" : ""}`, text: c.name,
  }))) : null;
  const el = h("section", { class: "view community" },
    h("div", { class: "view-head" }, h("h2", { text: t("community.title", { name: compound.name }) }),
      h("span", { class: "muted", text: compound.code })),
    chips, legend(), grid);
  const buildings = (compound.children || []).filter((n) => n.level === "building");
  let totals = null;
  let alive = true;

  async function load() {
    try {
      const query = withQuery("/alerts", { state: "firing", node: compound.code, limit: 1000 });
      const [page, loadedTotals] = await Promise.all([
        api(query), totals || Promise.all(buildings.map((b) => deviceTotal(b.code)))]);
      totals = loadedTotals;
      if (!alive) return;
      const counts = countsByBuilding(page.items, buildings);
      put(grid, buildings.length
        ? buildings.map((b, i) => tile(compound, b, counts.get(b.code), totals[i]))
        : note("info", t("community.no_buildings")));
    } catch (err) {
      if (alive) put(grid, note("error", err.detail));
    }
  }

  const reloadSoon = debounce(load, 300);
  load();
  return {
    el,
    onEvent(type) {
      if (type.startsWith("alert.")) reloadSoon();
    },
    refresh: reloadSoon,
    dispose() {
      alive = false;
      reloadSoon.cancel();
    },
  };
}

/**
 * The community view: tiles of a compound, or one building's devices. A token scoped at a
 * building or unit goes straight to its devices.
 */
export function communityView(ctx, compoundCode, buildingCode) {
  const holder = h("div", { class: "holder" }, h("p", { class: "loading", text: t("loading") }));
  let inner = null;
  let alive = true;
  ctx.tree().then((tree) => {
    if (!alive) return;
    const below = tree.level === "building" || tree.level === "unit";
    if (buildingCode || below) {
      inner = buildingView(ctx, tree, compoundCode, buildingCode || tree.code);
    } else if (nodesAt(tree, "compound").length === 0) {
      put(holder, note("info", t("community.no_compounds")));
      return;
    } else {
      inner = tilesView(ctx, tree, compoundCode);
    }
    put(holder, inner.el);
  }).catch((err) => {
    if (alive) put(holder, note("error", err.detail));
  });
  return {
    el: holder,
    onEvent(type, data) {
      if (inner) inner.onEvent(type, data);
    },
    refresh() {
      if (inner) inner.refresh();
    },
    dispose() {
      alive = false;
      if (inner) inner.dispose();
    },
  };
}
