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
