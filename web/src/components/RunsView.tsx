import { useEffect, useMemo, useState } from "react";
import { type RunDetail, type RunExamples, type RunInfo, api } from "../api/client";
import { type Row, configKey, formatCell, groupByConfig, queryCurve } from "../lib/table";
import { CHART_COLORS, LineChart, MapCanvas, SortableTable } from "./common";

const RUN_COLUMNS = ["id", "model", "attack", "interpreter", "n", "asr", "iou_topk_mean", "map_l1_mean", "queries_mean", "seconds"];
const RECORD_COLUMNS = ["index", "label", "target", "pred", "success", "confidence", "iou_topk_mean", "map_l1", "map_l2", "queries"];

/** One row per run: its configuration and the scalar entries of its summary. */
export function runRow(run: RunInfo): Row {
  return { id: run.id, ...run.config, n: run.n_records, ...run.summary };
}

/** ``open``: a run to refresh the list for and show (a batch the lab just saved). */
export function RunsView({ open: toOpen = null }: { open?: { id: string; at: number } | null }) {
  const [runs, setRuns] = useState<RunInfo[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [detail, setDetail] = useState<RunDetail | null>(null);

  const refresh = () => {
    setError(null);
    api.runs().then(setRuns, (e: unknown) => setError(e instanceof Error ? e.message : String(e)));
  };
  useEffect(refresh, []);

  const rows = useMemo(() => (runs ?? []).map(runRow), [runs]);
  const open = (id: string) => {
    setError(null);
    api.run(id).then(setDetail, (e: unknown) => setError(e instanceof Error ? e.message : String(e)));
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
        <SortableTable rows={rows} preferred={RUN_COLUMNS} initialSort="id" onRowClick={(r) => open(String(r.id))} testId="runs-table" />
      )}
      {detail && <RunDetailView run={detail} />}
    </div>
  );
}

const CONFIG_COLUMNS = ["model", "interpreter", "attack", "defense", "eps", "n", "asr", "iou_topk_mean", "map_l1_mean", "queries_mean"];

function RunDetailView({ run }: { run: RunDetail }) {
  const all = run.records as Row[];
  const configs = useMemo(() => groupByConfig(all), [all]);
  const [config, setConfig] = useState<string | null>(null);
  useEffect(() => setConfig(null), [run]);
  const records = useMemo(() => (config === null ? all : all.filter((r) => configKey(r) === config)), [all, config]);
  // one query-count curve per configuration with query counts
  const curves = useMemo(() => {
    const keys = [...new Set(records.map(configKey))];
    return keys.flatMap((k) => {
      const rows = records.filter((r) => configKey(r) === k);
      const points = queryCurve(rows);
      const first = rows[0] ?? {};
      const name = [first.model, first.interpreter, first.attack, first.defense].filter((v) => typeof v === "string").join(" / ") || k;
      return points ? [{ name, points }] : [];
    });
  }, [records]);
  return (
    <section className="run-detail" data-testid="run-detail">
      <h3>{run.id}</h3>
      <p className="muted small">{run.path}</p>
      <div className="panels">
        <dl className="kv" data-testid="run-summary">
          {Object.entries({ ...run.config, ...run.summary }).map(([k, v]) => (
            <div key={k}>
              <dt>{k}</dt>
              <dd>{formatCell(v)}</dd>
            </div>
          ))}
        </dl>
        {curves.length > 0 ? (
          <div>
            <h4>Query-count curve</h4>
            <LineChart series={curves} xLabel="queries" yLabel="success rate" yMax={1} testId="query-curve" />
            {curves.length > 1 && (
              <ul className="legend">
                {curves.map((c, i) => (
                  <li key={c.name} style={{ color: CHART_COLORS[i % CHART_COLORS.length] }}>
                    {c.name}
                  </li>
                ))}
              </ul>
            )}
          </div>
        ) : (
          <p className="muted small">No per-image query counts in this run (white-box attack): no query-count curve.</p>
        )}
      </div>
      {run.images.length > 0 && (
        <div className="gallery" data-testid="gallery">
          {run.images.map((name) => (
            <figure key={name}>
              <a href={api.runFileUrl(run.id, name)} target="_blank" rel="noreferrer">
                <img src={api.runFileUrl(run.id, name)} alt={name} />
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
          <p className="muted small">Click a configuration to see only its records and query-count curve.</p>
          <SortableTable rows={configs} preferred={CONFIG_COLUMNS} onRowClick={(r) => setConfig(String(r.config))} testId="configs-table" />
        </>
      )}
      <ExamplesView run={run} config={config} />
      <h4>
        Records ({config === null ? run.n_records : `${records.length} of configuration ${config}`}
        {run.truncated ? `, first ${records.length} shown` : ""})
      </h4>
      <SortableTable rows={records} preferred={RECORD_COLUMNS} testId="records-table" />
    </section>
  );
}

/** The images and maps the run saved (adversarial.safetensors or bench galleries), never recomputed. */
function ExamplesView({ run, config }: { run: RunDetail; config: string | null }) {
  const [data, setData] = useState<RunExamples | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [overlay, setOverlay] = useState(true);
  useEffect(() => {
    let live = true;
    setError(null);
    const wanted = config !== null && data?.configs.includes(config) ? config : null;
    api.runExamples(run.id, wanted).then(
      (d) => live && setData(d),
      (e: unknown) => live && setError(e instanceof Error ? e.message : String(e)),
    );
    return () => {
      live = false;
    };
  }, [run.id, config]);
  if (error) return <p className="error">{error}</p>;
  if (!data || data.examples.length === 0) return null;
  const classes = (c: number | null | undefined) => (c === null || c === undefined ? "?" : String(c));
  return (
    <section data-testid="examples">
      <h4>
        Saved examples ({data.examples.length}){data.config ? ` of configuration ${data.config}` : ""}{" "}
        <label className="toggle small">
          <input type="checkbox" checked={overlay} onChange={(e) => setOverlay(e.target.checked)} /> overlay maps
        </label>
      </h4>
      <div className="examples">
        {data.examples.map((ex) => (
          <figure key={ex.position} className="example">
            <div className="row">
              <img src={ex.benign_image} alt={`benign ${ex.position}`} />
              {ex.benign_map && <MapCanvas map={ex.benign_map} image={ex.benign_image} overlay={overlay} size={72} />}
              <img src={ex.adversarial_image} alt={`adversarial ${ex.position}`} />
              {ex.adversarial_map && <MapCanvas map={ex.adversarial_map} image={ex.adversarial_image} overlay={overlay} size={72} />}
              <img src={ex.perturbation_image} alt={`perturbation ${ex.position}`} />
            </div>
            <figcaption>
              #{ex.position}: attacked {classes(ex.label)} → predicted {classes(ex.pred)}
            </figcaption>
          </figure>
        ))}
      </div>
    </section>
  );
}
