import { useEffect, useMemo, useState } from "react";
import { type RunDetail, type RunExamples, type RunInfo, api } from "../api/client";
import {
  FORMATS,
  LABELS,
  type Row,
  configKey,
  configLabel,
  filterRows,
  formatCell,
  groupByConfig,
  queryCurve,
  recordsIouCurve,
  summaryIouCurve,
} from "../lib/table";
import { type ColumnGroup, LineChart, Legend, MapCanvas, ScatterChart, SortableTable } from "./common";

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

// the runs table: a few readable column groups; every other summary entry behind "all columns"
const RUN_GROUPS: ColumnGroup[] = [
  { label: "run", columns: ["id", "setup"] },
  { label: "configuration", columns: ["model", "attack", "interpreter", "defense", "eps", "targeted", "n"] },
  { label: "effect", columns: ["asr", "iou_topk_mean", "map_l1_mean", "queries_mean"] },
  { label: "cost", columns: ["seconds"] },
];
const RUN_COLUMNS = RUN_GROUPS.flatMap((g) => g.columns);
const CONFIG_GROUPS: ColumnGroup[] = [
  { label: "configuration", columns: ["setup", "model", "interpreter", "attack", "defense", "eps", "n"] },
  { label: "effect", columns: ["asr", "iou_topk_mean", "map_l1_mean", "queries_mean"] },
];
const CONFIG_COLUMNS = CONFIG_GROUPS.flatMap((g) => g.columns);
const RECORD_GROUPS: ColumnGroup[] = [
  { label: "image", columns: ["index", "label", "target", "pred"] },
  { label: "effect", columns: ["success", "confidence", "iou_topk_mean", "map_l1", "map_l2", "queries"] },
];
const RECORD_COLUMNS = RECORD_GROUPS.flatMap((g) => g.columns);
const FILTERS = ["attack", "interpreter", "model"] as const;

/** One row per run: its configuration, a readable label, size and the scalar entries of its summary. */
export function runRow(run: RunInfo): Row {
  const row: Row = { id: run.id, ...run.config, n: run.n_records, ...run.summary };
  const setup = configLabel(row);
  return setup ? { ...row, setup } : row;
}

/** Columns present in ``rows`` among ``wanted``, in that order. */
const present = (rows: Row[], wanted: string[]) => wanted.filter((c) => rows.some((r) => r[c] !== undefined && r[c] !== null));

/** ``open``: a run to refresh the list for and show (a batch the lab just saved). */
export function RunsView({ open: toOpen = null }: { open?: { id: string; at: number } | null }) {
  const [runs, setRuns] = useState<RunInfo[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [detail, setDetail] = useState<RunDetail | null>(null);
  const [text, setText] = useState("");
  const [equal, setEqual] = useState<Record<string, string>>({});
  const [allColumns, setAllColumns] = useState(false);

  const refresh = () => {
    setError(null);
    api.runs().then(setRuns, (e: unknown) => setError(message(e)));
  };
  useEffect(refresh, []);

  const rows = useMemo(() => (runs ?? []).map(runRow), [runs]);
  const shown = useMemo(() => filterRows(rows, text, equal), [rows, text, equal]);
  const choices = (k: string) => [...new Set(rows.map((r) => r[k]).filter((v): v is string => typeof v === "string"))].sort();
  const open = (id: string) => {
    setError(null);
    api.run(id).then(setDetail, (e: unknown) => setError(message(e)));
  };
  useEffect(() => {
    if (!toOpen) return;
    refresh();
    open(toOpen.id);
  }, [toOpen]);

  return (
    <div className="runs">
      <h2>
        Benchmark runs{" "}
        <button type="button" onClick={refresh} data-testid="refresh-runs">
          refresh
        </button>
      </h2>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {runs && runs.length === 0 && (
        <p className="muted">
          No runs found. Start the lab with <code>idlsec serve --runs DIR</code>, where DIR holds the output folders of{" "}
          <code>idlsec attack</code> or the benchmarks (summary.json / results.jsonl).
        </p>
      )}
      {rows.length > 0 && (
        <>
          <div className="filters" role="search" aria-label="filter runs">
            <label>
              search
              <input type="search" value={text} onChange={(e) => setText(e.target.value)} data-testid="runs-search" />
            </label>
            {FILTERS.map((k) =>
              choices(k).length > 1 ? (
                <label key={k}>
                  {k}
                  <select value={equal[k] ?? ""} onChange={(e) => setEqual((q) => ({ ...q, [k]: e.target.value }))} data-testid={`filter-${k}`}>
                    <option value="">all</option>
                    {choices(k).map((c) => (
                      <option key={c} value={c}>
                        {c}
                      </option>
                    ))}
                  </select>
                </label>
              ) : null,
            )}
            <label className="toggle-inline">
              <span>
                <input type="checkbox" checked={allColumns} onChange={(e) => setAllColumns(e.target.checked)} data-testid="all-columns" /> all
                columns
              </span>
            </label>
            <span className="muted small" aria-live="polite">
              {shown.length} of {rows.length} runs
            </span>
          </div>
          <SortableTable
            rows={shown}
            columns={allColumns ? undefined : present(shown, RUN_COLUMNS)}
            preferred={RUN_COLUMNS}
            groups={allColumns ? undefined : RUN_GROUPS}
            labels={LABELS}
            format={FORMATS}
            initialSort="id"
            onRowClick={(r) => open(String(r.id))}
            rowLabel={(r) => `run ${String(r.id)}`}
            testId="runs-table"
            caption="runs (click or press Enter on a row to open it)"
          />
          <RunCharts rows={shown} runs={runs ?? []} />
        </>
      )}
      {detail && <RunDetailView run={detail} />}
    </div>
  );
}

/** Comparisons of the runs shown: ASR against top-k IoU, IoU@k curves, and ASR against queries. */
function RunCharts({ rows, runs }: { rows: Row[]; runs: RunInfo[] }) {
  const scatter = rows
    .filter((r) => typeof r.asr === "number" && typeof r.iou_topk_mean === "number")
    .map((r) => ({ name: String(r.id), x: r.iou_topk_mean as number, y: r.asr as number }));
  const iou = rows.flatMap((r) => {
    const points = summaryIouCurve(r);
    return points ? [{ name: String(r.id), points }] : [];
  }).slice(0, 8);
  // query curves need the records: fetched for the black-box runs shown (at most 6)
  const ids = useMemo(() => {
    const shown = new Set(rows.map((r) => String(r.id)));
    return runs.filter((r) => r.has_queries && shown.has(r.id)).map((r) => r.id).slice(0, 6);
  }, [rows, runs]);
  const [queries, setQueries] = useState<{ name: string; points: { x: number; y: number }[] }[]>([]);
  useEffect(() => {
    let live = true;
    Promise.all(ids.map((id) => api.run(id).then((d) => ({ id, records: d.records as Row[] }), () => null))).then((got) => {
      if (!live) return;
      setQueries(
        got.flatMap((g) => {
          if (!g) return [];
          const points = queryCurve(g.records);
          return points ? [{ name: g.id, points }] : [];
        }),
      );
    });
    return () => {
      live = false;
    };
  }, [ids.join("\n")]);
  if (scatter.length === 0 && iou.length === 0 && queries.length === 0) return null;
  return (
    <section className="charts" aria-label="compare runs" data-testid="run-charts">
      {scatter.length > 0 && (
        <figure>
          <ScatterChart points={scatter} xLabel="top-k IoU" yLabel="ASR" xMax={1} yMax={1} testId="asr-iou-scatter" />
          <figcaption>Attack success rate against top-k IoU, one point per run (top right: fools the model and keeps the map).</figcaption>
          <Legend names={scatter.map((p) => p.name)} />
        </figure>
      )}
      {iou.length > 0 && (
        <figure>
          <LineChart series={iou} xLabel="k (% of pixels)" yLabel="top-k IoU" yMax={1} testId="iou-k-curves" />
          <figcaption>Top-k IoU of the benign and adversarial maps against k, per run.</figcaption>
          <Legend names={iou.map((s) => s.name)} />
        </figure>
      )}
      {queries.length > 0 && (
        <figure>
          <LineChart series={queries} xLabel="queries" yLabel="ASR" yMax={1} testId="runs-query-curves" />
          <figcaption>Black-box runs: fraction of images fooled within a query budget.</figcaption>
          <Legend names={queries.map((s) => s.name)} />
        </figure>
      )}
    </section>
  );
}

function RunDetailView({ run }: { run: RunDetail }) {
  const all = run.records as Row[];
  const configs = useMemo(() => groupByConfig(all).map((c): Row => ({ ...c, setup: configLabel(c) })), [all]);
  const [config, setConfig] = useState<string | null>(null);
  useEffect(() => setConfig(null), [run]);
  const records = useMemo(() => (config === null ? all : all.filter((r) => configKey(r) === config)), [all, config]);
  const nameOf = (k: string) => String(configs.find((c) => c.config === k)?.setup ?? k);
  const perConfig = useMemo(() => {
    const keys = [...new Set(records.map(configKey))];
    return keys.map((k) => ({ key: k, name: String(nameOf(k)), rows: records.filter((r) => configKey(r) === k) }));
  }, [records, configs]);
  const curves = perConfig.flatMap((g) => {
    const points = queryCurve(g.rows);
    return points ? [{ name: g.name, points }] : [];
  });
  const iouCurves = perConfig.flatMap((g) => {
    const points = recordsIouCurve(g.rows);
    return points ? [{ name: g.name, points }] : [];
  });
  const summary = { ...run.config, ...run.summary };
  const title = configLabel(summary as Row);
  const chosen = config === null ? null : nameOf(config);
  return (
    <section className="run-detail" data-testid="run-detail">
      <h3>{run.id}</h3>
      {title && <p>{title}</p>}
      <p className="muted small">{run.path}</p>
      <div className="panels">
        <dl className="kv" data-testid="run-summary">
          {Object.entries(summary)
            .filter(([k]) => !k.startsWith("iou_topk_curve.")) // plotted beside
            .map(([k, v]) => (
            <div key={k}>
              <dt title={k}>{LABELS[k] ?? k}</dt>
              <dd>{FORMATS[k] ? FORMATS[k](v) : formatCell(v)}</dd>
            </div>
          ))}
        </dl>
        {curves.length > 0 ? (
          <figure>
            <LineChart series={curves} xLabel="queries" yLabel="ASR" yMax={1} testId="query-curve" />
            <figcaption>Fraction of images fooled within a query budget.</figcaption>
            <Legend names={curves.map((c) => c.name)} />
          </figure>
        ) : (
          <p className="muted small">No per-image query counts in this run (white-box attack): no query-count curve.</p>
        )}
        {iouCurves.length > 0 && (
          <figure>
            <LineChart series={iouCurves} xLabel="k (% of pixels)" yLabel="top-k IoU" yMax={1} testId="iou-k-curve" />
            <figcaption>Mean top-k IoU of the benign and adversarial maps against k.</figcaption>
            <Legend names={iouCurves.map((c) => c.name)} />
          </figure>
        )}
      </div>
      {run.images.length > 0 && (
        <div className="gallery" data-testid="gallery">
          {run.images.map((name) => (
            <figure key={name}>
              <a href={api.runFileUrl(run.id, name)} target="_blank" rel="noreferrer">
                <img src={api.runFileUrl(run.id, name)} alt={`${name} (saved with the run)`} />
              </a>
              <figcaption>{name}</figcaption>
            </figure>
          ))}
        </div>
      )}
      {configs.length > 1 && (
        <>
          <h4>
            Configurations ({configs.length}){" "}
            {config !== null && (
              <button type="button" onClick={() => setConfig(null)}>
                show all
              </button>
            )}
          </h4>
          <p className="muted small">Open a configuration (click, or Enter) to see only its records and curves.</p>
          <SortableTable
            rows={configs}
            columns={present(configs, CONFIG_COLUMNS)}
            groups={CONFIG_GROUPS}
            labels={LABELS}
            format={FORMATS}
            onRowClick={(r) => setConfig(String(r.config))}
            rowLabel={(r) => String(r.setup)}
            testId="configs-table"
            caption="configurations of the run"
          />
        </>
      )}
      <ExamplesView run={run} config={config} name={chosen} />
      <h4>
        Records ({config === null ? run.n_records : `${records.length} of ${chosen}`}
        {run.truncated ? `, first ${records.length} shown` : ""})
      </h4>
      <SortableTable
        rows={records}
        preferred={RECORD_COLUMNS}
        groups={undefined}
        labels={LABELS}
        format={FORMATS}
        testId="records-table"
        caption="per-image records"
      />
    </section>
  );
}

/** The images and maps the run saved (adversarial.safetensors or bench galleries), never recomputed;
 * the same captions for bench and attack runs. */
function ExamplesView({ run, config, name }: { run: RunDetail; config: string | null; name: string | null }) {
  const [data, setData] = useState<RunExamples | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [overlay, setOverlay] = useState(true);
  useEffect(() => {
    let live = true;
    setError(null);
    const wanted = config !== null && data?.configs.includes(config) ? config : null;
    api.runExamples(run.id, wanted).then(
      (d) => live && setData(d),
      (e: unknown) => live && setError(message(e)),
    );
    return () => {
      live = false;
    };
  }, [run.id, config]);
  if (error) return <p className="error">{error}</p>;
  if (!data || data.examples.length === 0) return null;
  const cls = (c: number | null | undefined) => (c === null || c === undefined ? "?" : String(c));
  return (
    <section data-testid="examples">
      <h4>
        Saved examples ({data.examples.length}){data.config ? ` of ${name ?? data.config}` : ""}{" "}
        <label className="toggle small">
          <input type="checkbox" checked={overlay} onChange={(e) => setOverlay(e.target.checked)} /> overlay maps
        </label>
      </h4>
      <div className="examples">
        {data.examples.map((ex) => (
          <figure key={ex.position} className="example">
            <div className="row">
              <img src={ex.benign_image} alt={`benign image ${ex.position}`} />
              {ex.benign_map && <MapCanvas map={ex.benign_map} image={ex.benign_image} overlay={overlay} size={72} />}
              <img src={ex.adversarial_image} alt={`adversarial image ${ex.position}`} />
              {ex.adversarial_map && <MapCanvas map={ex.adversarial_map} image={ex.adversarial_image} overlay={overlay} size={72} />}
              <img src={ex.perturbation_image} alt={`perturbation ${ex.position}`} />
            </div>
            <div className="cap" aria-hidden="true">
              <span>benign</span>
              {ex.benign_map && <span>benign map</span>}
              <span>adversarial</span>
              {ex.adversarial_map && <span>adv. map</span>}
              <span>perturbation</span>
            </div>
            <figcaption>
              image {ex.position}: attacked class {cls(ex.label)} → predicted {cls(ex.pred)}
            </figcaption>
          </figure>
        ))}
      </div>
    </section>
  );
}
