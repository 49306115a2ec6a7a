// Sorting and summarising the records of runs (plain data, no React).
export type Cell = string | number | boolean | null | undefined | number[];
export type Row = Record<string, Cell>;
export type Direction = "asc" | "desc";

function isScalar(v: Cell): v is string | number | boolean {
  return typeof v === "string" || typeof v === "number" || typeof v === "boolean";
}

/** Compare two cells: numbers numerically, booleans as 0/1, strings naturally; empty cells last. */
export function compareCells(a: Cell, b: Cell): number {
  const ea = !isScalar(a) || (typeof a === "number" && Number.isNaN(a));
  const eb = !isScalar(b) || (typeof b === "number" && Number.isNaN(b));
  if (ea || eb) return ea === eb ? 0 : ea ? 1 : -1;
  const na = typeof a === "boolean" ? Number(a) : a;
  const nb = typeof b === "boolean" ? Number(b) : b;
  if (typeof na === "number" && typeof nb === "number") return na - nb;
  return String(na).localeCompare(String(nb), undefined, { numeric: true });
}

/** A stably sorted copy; empty cells stay last in both directions. */
export function sortRows<T extends Row>(rows: readonly T[], key: string, dir: Direction = "asc"): T[] {
  return rows
    .map((row, i) => ({ row, i }))
    .sort((x, y) => {
      const a = x.row[key];
      const b = y.row[key];
      const emptyA = !isScalar(a);
      const emptyB = !isScalar(b);
      if (emptyA || emptyB) return emptyA === emptyB ? x.i - y.i : emptyA ? 1 : -1;
      const c = compareCells(a, b);
      return (dir === "asc" ? c : -c) || x.i - y.i;
    })
    .map((e) => e.row);
}

/** The columns worth showing: keys with scalar values, in first-seen order, preferred ones first. */
export function columnsOf(rows: readonly Row[], preferred: readonly string[] = []): string[] {
  const seen = new Set<string>();
  for (const row of rows.slice(0, 200)) {
    for (const [k, v] of Object.entries(row)) if (isScalar(v) || v === null) seen.add(k);
  }
  const first = preferred.filter((k) => seen.has(k));
  return [...first, ...[...seen].filter((k) => !first.includes(k))];
}

/** Short numbers for tables: integers as is, others with 4 significant digits. */
export function formatCell(v: Cell): string {
  if (v === null || v === undefined) return "–";
  if (Array.isArray(v)) return `[${v.length}]`;
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (typeof v === "number") {
    if (!Number.isFinite(v)) return "–";
    if (Number.isInteger(v)) return String(v);
    const abs = Math.abs(v);
    return abs !== 0 && (abs < 1e-3 || abs >= 1e5) ? v.toExponential(2) : String(Number(v.toPrecision(4)));
  }
  return v;
}

export interface CurvePoint {
  x: number;
  y: number;
}

/**
 * The query-count curve of a black-box attack: the attack success rate within a query budget q
 * (the fraction of all images attacked successfully with at most q queries), at every budget where
 * it changes. Null when no record carries a query count.
 */
export function queryCurve(rows: readonly Row[]): CurvePoint[] | null {
  const withQ = rows.filter((r) => typeof r.queries === "number" && Number.isFinite(r.queries));
  if (withQ.length === 0) return null;
  const hits = withQ
    .filter((r) => r.success === true || r.success === 1)
    .map((r) => r.queries as number)
    .sort((a, b) => a - b);
  const points: CurvePoint[] = [{ x: 0, y: 0 }];
  hits.forEach((q, i) => {
    const y = (i + 1) / rows.length;
    const last = points[points.length - 1];
    if (last && last.x === q) last.y = y;
    else points.push({ x: q, y });
  });
  const maxQ = Math.max(...withQ.map((r) => r.queries as number));
  const last = points[points.length - 1];
  if (last && last.x < maxQ) points.push({ x: maxQ, y: last.y });
  return points;
}

const CONFIG_KEYS = ["model", "dataset", "interpreter", "attack", "defense", "eps", "seed"] as const;
const NOT_AVERAGED = new Set(["index", "label", "target", "pred", "label_attacked", "pos", "seed", "eps", "seconds"]);

/** The configuration a record belongs to: the bench's `config` key, else its configuration fields. */
export function configKey(row: Row): string {
  if (typeof row.config === "string" || typeof row.config === "number") return String(row.config);
  return JSON.stringify(CONFIG_KEYS.map((k) => row[k] ?? null));
}

/**
 * One row per configuration of a (bench) results file: its configuration fields, the number of
 * images, the success rate, the means of the numeric per-image metrics and the total seconds.
 */
export function groupByConfig(rows: readonly Row[]): Row[] {
  const groups = new Map<string, Row[]>();
  for (const r of rows) {
    const key = configKey(r);
    const g = groups.get(key);
    if (g) g.push(r);
    else groups.set(key, [r]);
  }
  return [...groups.entries()].map(([key, g]) => {
    const first = g[0] ?? {};
    const out: Row = { config: key };
    for (const k of CONFIG_KEYS) if (k in first) out[k] = first[k];
    out.n = g.length;
    if (g.some((r) => typeof r.success === "boolean")) out.asr = g.filter((r) => r.success === true).length / g.length;
    const numeric = columnsOf(g).filter((k) => !NOT_AVERAGED.has(k) && !(k in out) && g.some((r) => typeof r[k] === "number"));
    for (const k of numeric) {
      const vals = g.map((r) => r[k]).filter((v): v is number => typeof v === "number" && Number.isFinite(v));
      if (vals.length) out[k.endsWith("_mean") ? k : `${k}_mean`] = vals.reduce((a, b) => a + b, 0) / vals.length;
    }
    const secs = g.map((r) => r.seconds).filter((v): v is number => typeof v === "number");
    if (secs.length) out.seconds = secs.reduce((a, b) => a + b, 0);
    return out;
  });
}

/** Readable column names for runs, configurations and records (the raw key is the tooltip). */
export const LABELS: Record<string, string> = {
  id: "run", setup: "configuration", label: "label", model: "model", dataset: "dataset", interpreter: "interpreter", attack: "attack",
  defense: "defense", eps: "ε (/255)", targeted: "targeted", n: "images", asr: "ASR", success: "success",
  iou_topk_mean: "top-k IoU", iou_topk_success_mean: "top-k IoU (successes)", map_l1_mean: "map L1", map_l1: "map L1",
  map_l2_mean: "map L2", map_l2: "map L2", spearman_mean: "Spearman", spearman: "Spearman", queries_mean: "queries (mean)",
  queries: "queries", seconds: "seconds", wall_seconds: "wall seconds", confidence_mean: "confidence", confidence: "confidence",
  linf_mean: "L∞", l2_mean: "L2", ssim_image_mean: "SSIM", index: "image", target: "target", pred: "predicted",
  "params.steps": "steps", max_queries: "query budget", split: "split", seed: "seed",
};

/** Cell formats: ε in 1/255, as everywhere in the lab. */
export const FORMATS: Record<string, (v: Cell) => string> = {
  eps: (v) => (typeof v === "number" ? `${Number((v * 255).toPrecision(3))}` : formatCell(v)),
};

/** "quscore × cam on cifar10-resnet20 (defense jpeg)": a configuration as people read it. */
export function configLabel(row: Row): string {
  const s = (k: string) => (typeof row[k] === "string" && row[k] !== "" ? String(row[k]) : null);
  const what = [s("attack"), s("interpreter")].filter(Boolean).join(" × ");
  const on = s("model");
  const parts = [what || null, on ? `on ${on}` : null].filter(Boolean).join(" ");
  const extra = [s("defense") && s("defense") !== "none" ? `defense ${s("defense")}` : null,
    typeof row.eps === "number" ? `ε ${Number((row.eps * 255).toPrecision(3))}/255` : null].filter(Boolean);
  return (parts || (row.config !== undefined ? String(row.config) : "")) + (extra.length ? ` (${extra.join(", ")})` : "");
}

export const K_GRID = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5];

/** Top-k IoU against k (in %) from a summary's iou_topk_curve.<k> entries; null without them. */
export function summaryIouCurve(row: Row): CurvePoint[] | null {
  const pts = Object.entries(row)
    .filter(([k, v]) => k.startsWith("iou_topk_curve.") && typeof v === "number")
    .map(([k, v]) => ({ x: 100 * Number(k.slice("iou_topk_curve.".length)), y: v as number }))
    .filter((p) => Number.isFinite(p.x))
    .sort((a, b) => a.x - b.x);
  return pts.length > 1 ? pts : null;
}

/** Mean top-k IoU against k (in %) over records carrying an iou_topk array (the k grid 5%..50%). */
export function recordsIouCurve(rows: readonly Row[]): CurvePoint[] | null {
  const arrays = rows.map((r) => r.iou_topk).filter((v): v is number[] => Array.isArray(v) && v.length > 1);
  if (arrays.length === 0) return null;
  const len = Math.min(...arrays.map((a) => a.length), K_GRID.length);
  return Array.from({ length: len }, (_, i) => ({
    x: 100 * (K_GRID[i] as number),
    y: arrays.reduce((s, a) => s + (a[i] ?? 0), 0) / arrays.length,
  }));
}

/** Rows whose cells contain ``text`` (case-insensitive) and whose fields equal each filter set. */
export function filterRows<T extends Row>(rows: readonly T[], text: string, equal: Record<string, string>): T[] {
  const t = text.trim().toLowerCase();
  return rows.filter(
    (r) =>
      Object.entries(equal).every(([k, v]) => v === "" || String(r[k] ?? "") === v) &&
      (t === "" || Object.values(r).some((v) => isScalar(v) && String(v).toLowerCase().includes(t))),
  );
}

/** Whether a map is degenerate: every value the same (all zero, e.g. a MASK map that found nothing). */
export function isConstantMap(values: readonly number[]): boolean {
  if (values.length === 0) return true;
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return hi - lo < 1e-6;
}
