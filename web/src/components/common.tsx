import { useEffect, useMemo, useRef, useState } from "react";
import type { MapData } from "../api/client";
import { jetGradient, mapToRGBA } from "../lib/colormap";
import { type CurvePoint, type Direction, type Row, columnsOf, formatCell, isConstantMap, sortRows } from "../lib/table";

/** An interpreter map, optionally over its image; pixelated upscaling keeps each cell visible. */
export function MapCanvas(props: { map: MapData; image?: string | undefined; overlay: boolean; size?: number; testId?: string }) {
  const { map, image, overlay, size = 160, testId } = props;
  const ref = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    const canvas = ref.current;
    const ctx = canvas?.getContext("2d");
    if (!canvas || !ctx) return;
    const cells = document.createElement("canvas");
    cells.width = map.width;
    cells.height = map.height;
    const cctx = cells.getContext("2d");
    if (!cctx) return;
    cctx.putImageData(new ImageData(mapToRGBA(map, overlay && image ? 0.5 : 1), map.width, map.height), 0, 0);
    const drawMap = () => {
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(cells, 0, 0, size, size);
    };
    ctx.clearRect(0, 0, size, size);
    if (overlay && image) {
      const img = new Image();
      img.onload = () => {
        ctx.imageSmoothingEnabled = false;
        ctx.drawImage(img, 0, 0, size, size);
        drawMap();
      };
      img.src = image;
    } else drawMap();
  }, [map, image, overlay, size]);
  const constant = isConstantMap(map.values);
  return (
    <>
      <canvas ref={ref} width={size} height={size} className="map" data-testid={testId} role="img"
        aria-label={constant ? "interpreter map (constant)" : "interpreter map"} />
      {constant && (
        <span className="map-note" role="note" data-testid={testId ? `${testId}-note` : "map-note"} style={{ maxWidth: size }}>
          constant map (all {formatCell(map.values[0] ?? 0)}): the interpreter marked no region, so IoU and distances to
          it say nothing
        </span>
      )}
    </>
  );
}

export function Colorbar() {
  return (
    <div className="colorbar">
      <span>0</span>
      <div style={{ background: jetGradient() }} />
      <span>1</span>
    </div>
  );
}

export function ProgressBar(props: { fraction: number; label?: string }) {
  const pct = Math.round(100 * Math.min(1, Math.max(0, props.fraction)));
  return (
    <div className="progress" role="progressbar" aria-valuenow={pct} aria-valuemin={0} aria-valuemax={100}>
      <div style={{ width: `${pct}%` }} />
      <span>{props.label ?? `${pct}%`}</span>
    </div>
  );
}

export const CHART_COLORS = ["#d9480f", "#1971c2", "#2f9e44", "#9c36b5", "#e67700", "#0c8599", "#c2255c", "#5c940d"];

/** The series' names beside a colour swatch each (text in the body colour, for contrast). */
export function Legend({ names }: { names: string[] }) {
  if (names.length < 2) return null;
  return (
    <ul className="legend">
      {names.map((n, i) => (
        <li key={n}>
          <span className="swatch" style={{ background: CHART_COLORS[i % CHART_COLORS.length] }} aria-hidden="true" /> {n}
        </li>
      ))}
    </ul>
  );
}

/** A small SVG scatter plot: one labelled point per item (its name is the point's tooltip). */
export function ScatterChart(props: {
  points: { name: string; x: number; y: number }[];
  xLabel: string;
  yLabel: string;
  xMax?: number;
  yMax?: number;
  width?: number;
  height?: number;
  testId?: string;
}) {
  const { points, xLabel, yLabel, width = 320, height = 200, testId } = props;
  if (points.length === 0) return null;
  const pad = { l: 44, r: 12, t: 10, b: 34 };
  const x1 = props.xMax ?? Math.max(...points.map((p) => p.x), 1e-9);
  const y1 = props.yMax ?? Math.max(...points.map((p) => p.y), 1e-9);
  const sx = (x: number) => pad.l + (x / x1) * (width - pad.l - pad.r);
  const sy = (y: number) => height - pad.b - (y / y1) * (height - pad.t - pad.b);
  return (
    <svg className="chart" width={width} height={height} data-testid={testId} role="img" aria-label={`${yLabel} against ${xLabel}, ${points.length} points`}>
      <line x1={pad.l} y1={height - pad.b} x2={width - pad.r} y2={height - pad.b} stroke="#888" />
      <line x1={pad.l} y1={pad.t} x2={pad.l} y2={height - pad.b} stroke="#888" />
      <text x={pad.l} y={height - pad.b + 14} fontSize="10">0</text>
      <text x={width - pad.r} y={height - pad.b + 14} fontSize="10" textAnchor="end">{formatCell(x1)}</text>
      <text x={pad.l - 4} y={height - pad.b} fontSize="10" textAnchor="end">0</text>
      <text x={pad.l - 4} y={pad.t + 8} fontSize="10" textAnchor="end">{formatCell(y1)}</text>
      <text x={(width + pad.l) / 2} y={height - 4} fontSize="11" textAnchor="middle">{xLabel}</text>
      <text x={12} y={(height - pad.b) / 2} fontSize="11" textAnchor="middle" transform={`rotate(-90 12 ${(height - pad.b) / 2})`}>
        {yLabel}
      </text>
      {points.map((p, i) => (
        <circle key={`${p.name}-${i}`} cx={sx(p.x)} cy={sy(p.y)} r={4.5} fill={CHART_COLORS[i % CHART_COLORS.length]} fillOpacity={0.85} stroke="#fff">
          <title>{`${p.name}: ${xLabel} ${formatCell(p.x)}, ${yLabel} ${formatCell(p.y)}`}</title>
        </circle>
      ))}
    </svg>
  );
}

/** A small SVG line chart; several series share the axes. */
export function LineChart(props: {
  series: { name: string; points: CurvePoint[]; color?: string }[];
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
  yMax?: number;
  testId?: string;
}) {
  const { series, xLabel, yLabel, width = 320, height = 180, testId } = props;
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return null;
  const pad = { l: 44, r: 10, t: 10, b: 34 };
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs) === x0 ? x0 + 1 : Math.max(...xs);
  const y0 = Math.min(0, ...ys);
  const y1 = props.yMax ?? (Math.max(...ys) === y0 ? y0 + 1 : Math.max(...ys));
  const sx = (x: number) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const sy = (y: number) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  const colors = CHART_COLORS;
  return (
    <svg className="chart" width={width} height={height} data-testid={testId} role="img" aria-label={`${yLabel} vs ${xLabel}`}>
      <line x1={pad.l} y1={height - pad.b} x2={width - pad.r} y2={height - pad.b} stroke="#888" />
      <line x1={pad.l} y1={pad.t} x2={pad.l} y2={height - pad.b} stroke="#888" />
      <text x={pad.l} y={height - pad.b + 14} fontSize="10">{formatCell(x0)}</text>
      <text x={width - pad.r} y={height - pad.b + 14} fontSize="10" textAnchor="end">{formatCell(x1)}</text>
      <text x={pad.l - 4} y={height - pad.b} fontSize="10" textAnchor="end">{formatCell(y0)}</text>
      <text x={pad.l - 4} y={pad.t + 8} fontSize="10" textAnchor="end">{formatCell(y1)}</text>
      <text x={(width + pad.l) / 2} y={height - 4} fontSize="11" textAnchor="middle">{xLabel}</text>
      <text x={12} y={(height - pad.b) / 2} fontSize="11" textAnchor="middle" transform={`rotate(-90 12 ${(height - pad.b) / 2})`}>
        {yLabel}
      </text>
      {series.map((s, i) => (
        <polyline
          key={s.name}
          fill="none"
          stroke={s.color ?? colors[i % colors.length]}
          strokeWidth={1.5}
          points={s.points.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ")}
        >
          <title>{s.name}</title>
        </polyline>
      ))}
    </svg>
  );
}

/** A group of adjacent columns under one header ("configuration", "effect", ...). */
export interface ColumnGroup {
  label: string;
  columns: string[];
}

/**
 * A table whose columns sort on click or Enter (again: reverse). ``labels`` name the columns,
 * ``groups`` put a header above runs of them; the scroll region and clickable rows take keyboard
 * focus (Enter or Space opens a row).
 */
export function SortableTable(props: {
  rows: Row[];
  preferred?: string[];
  columns?: string[];
  labels?: Record<string, string>;
  format?: Record<string, (v: Row[string]) => string>;
  groups?: ColumnGroup[];
  initialSort?: string;
  pageSize?: number;
  onRowClick?: (row: Row) => void;
  rowLabel?: (row: Row) => string;
  testId?: string;
  caption?: string;
}) {
  const columns = useMemo(() => props.columns ?? columnsOf(props.rows, props.preferred), [props.columns, props.rows, props.preferred]);
  const [sort, setSort] = useState<{ key: string; dir: Direction } | null>(
    props.initialSort ? { key: props.initialSort, dir: "asc" } : null,
  );
  const [limit, setLimit] = useState(props.pageSize ?? 200);
  const rows = useMemo(() => (sort ? sortRows(props.rows, sort.key, sort.dir) : props.rows), [props.rows, sort]);
  const click = (key: string) =>
    setSort((s) => (s && s.key === key ? { key, dir: s.dir === "asc" ? "desc" : "asc" } : { key, dir: "asc" }));
  const label = (c: string) => props.labels?.[c] ?? c;
  const cell = (r: Row, c: string) => (props.format?.[c] ? props.format[c](r[c]) : formatCell(r[c]));
  // group headers over consecutive columns; columns in no group get an empty cell
  const bands: { label: string; span: number }[] = [];
  if (props.groups) {
    for (const c of columns) {
      const g = props.groups.find((x) => x.columns.includes(c))?.label ?? "";
      const last = bands[bands.length - 1];
      if (last && last.label === g) last.span += 1;
      else bands.push({ label: g, span: 1 });
    }
  }
  const region = props.caption ?? `table ${props.testId ?? ""}`.trim();
  return (
    <div className="table-wrap" tabIndex={0} role="region" aria-label={`${region} (scrollable)`}>
      <table className="sortable" data-testid={props.testId}>
        {props.caption && <caption className="sr-only">{props.caption}</caption>}
        <thead>
          {bands.length > 0 && (
            <tr>
              {bands.map((b, i) => (
                <th key={i} colSpan={b.span} scope="colgroup" className="group">
                  {b.label}
                </th>
              ))}
            </tr>
          )}
          <tr>
            {columns.map((c) => (
              <th key={c} scope="col" aria-sort={sort?.key === c ? (sort.dir === "asc" ? "ascending" : "descending") : "none"} title={c}>
                <button type="button" onClick={() => click(c)}>
                  {label(c)}
                  {sort?.key === c ? (sort.dir === "asc" ? " ▲" : " ▼") : ""}
                </button>
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.slice(0, limit).map((r, i) => (
            <tr
              key={i}
              onClick={props.onRowClick ? () => props.onRowClick?.(r) : undefined}
              onKeyDown={
                props.onRowClick
                  ? (e) => {
                      if (e.key === "Enter" || e.key === " ") {
                        e.preventDefault();
                        props.onRowClick?.(r);
                      }
                    }
                  : undefined
              }
              tabIndex={props.onRowClick ? 0 : undefined}
              aria-label={props.onRowClick && props.rowLabel ? `open ${props.rowLabel(r)}` : undefined}
              className={props.onRowClick ? "clickable" : undefined}
            >
              {columns.map((c) => (
                <td key={c} className={typeof r[c] === "number" ? "num" : undefined}>
                  {cell(r, c)}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
      {rows.length > limit && (
        <button type="button" onClick={() => setLimit((l) => l + 500)}>
          show more ({rows.length - limit} hidden)
        </button>
      )}
    </div>
  );
}
