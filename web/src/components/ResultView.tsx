import { useState } from "react";
import type { AttackResult, CompareResult, Registry } from "../api/client";
import { formatCell } from "../lib/table";
import { Colorbar, LineChart, MapCanvas } from "./common";

const METRIC_HELP: Record<string, string> = {
  iou_topk_mean: "IoU of the top-k% salient pixels, benign vs adversarial map, mean over k = 5%..50% (1 = same)",
  map_l1: "L1 distance of the min-max normalised maps (0 = same)",
  map_l2: "L2 distance of the min-max normalised maps (0 = same)",
  spearman: "rank correlation of the two maps",
  linf: "L∞ norm of the perturbation",
  l2: "L2 norm of the perturbation",
  ssim_image: "SSIM between benign and adversarial image",
  confidence: "p(target) when targeted, p(prediction) otherwise",
};

export function ResultView(props: {
  result: AttackResult;
  registry: Registry;
  onCompare: (jobId: string, interpreters: string[]) => void;
  comparison: CompareResult | null;
  compareError?: string | null;
}) {
  const { result: r, registry } = props;
  const [overlay, setOverlay] = useState(true);
  const [chosen, setChosen] = useState<string[]>(() => registry.interpreters.map((i) => i.name));
  const iou = Object.entries(r.iou_topk).map(([k, v]) => ({ x: 100 * Number(k), y: v }));
  const loss = r.loss_history.map((y, i) => ({ x: i + 1, y }));
  const queries = (r.query_history ?? []).map((y, i) => ({ x: i + 1, y }));
  const label = (c: number | null | undefined) => (c === null || c === undefined ? "?" : `${r.classes[c] ?? c} (${c})`);
  return (
    <section className="result" data-testid="result">
      <h2>
        {r.attack} × {r.interpreter} on {r.model}{" "}
        <span className={r.success ? "ok" : "bad"} data-testid="success">
          {r.success ? "attack succeeded" : "attack failed"}
        </span>
      </h2>
      <p className="muted">
        {r.upload ? `uploaded image ${r.upload}` : `${r.dataset} test image ${r.index}`} · true class {label(r.true_label)} ·{" "}
        {r.targeted ? `target ${label(r.attacked_label)}` : "untargeted"} · {formatCell(r.seconds)} s
        {r.surrogate ? ` · black-box, surrogate ${r.surrogate}` : ""}
      </p>
      <label className="toggle">
        <input type="checkbox" checked={overlay} onChange={(e) => setOverlay(e.target.checked)} data-testid="overlay-toggle" /> overlay maps on
        images
      </label>
      <div className="images">
        <figure>
          <img src={r.benign_image} alt="benign" data-testid="benign-image" />
          <figcaption data-testid="benign-pred">
            benign: {r.benign.name} {(100 * r.benign.confidence).toFixed(1)}%
          </figcaption>
        </figure>
        <figure>
          <img src={r.adversarial_image} alt="adversarial" data-testid="adversarial-image" />
          <figcaption data-testid="adversarial-pred">
            adversarial: {r.adversarial.name} {(100 * r.adversarial.confidence).toFixed(1)}%
          </figcaption>
        </figure>
        <figure>
          <img src={r.perturbation_image} alt="perturbation" data-testid="perturbation-image" />
          <figcaption>perturbation ×{r.perturbation_scale.toFixed(0)}</figcaption>
        </figure>
        {r.benign_map && (
          <figure>
            <MapCanvas map={r.benign_map} image={r.benign_image} overlay={overlay} testId="benign-map" />
            <figcaption>benign {r.interpreter} map</figcaption>
          </figure>
        )}
        {r.adversarial_map && (
          <figure>
            <MapCanvas map={r.adversarial_map} image={r.adversarial_image} overlay={overlay} testId="adversarial-map" />
            <figcaption>adversarial {r.interpreter} map</figcaption>
          </figure>
        )}
      </div>
      <Colorbar />
      <div className="panels">
        <table className="metrics" data-testid="metrics">
          <tbody>
            {Object.entries(r.metrics).map(([k, v]) => (
              <tr key={k} title={METRIC_HELP[k] ?? ""}>
                <th>{k}</th>
                <td data-testid={`metric-${k}`}>{formatCell(v)}</td>
              </tr>
            ))}
            {r.queries !== null && r.queries !== undefined && (
              <tr>
                <th>queries</th>
                <td data-testid="metric-queries">{formatCell(r.queries)}</td>
              </tr>
            )}
          </tbody>
        </table>
        {iou.length > 0 && <LineChart series={[{ name: "top-k IoU", points: iou }]} xLabel="k (% of pixels)" yLabel="IoU" yMax={1} testId="iou-chart" />}
        {loss.length > 1 && <LineChart series={[{ name: "loss", points: loss }]} xLabel="step" yLabel="loss" />}
        {queries.length > 1 && <LineChart series={[{ name: "queries", points: queries }]} xLabel="step" yLabel="queries" testId="query-history" />}
      </div>
      <h3>Compare interpreters on this adversarial image</h3>
      <p className="muted">
        The maps of other interpreters on the same benign and adversarial image: an attack tuned to one interpreter often shows under
        another (the signal an ensemble detector uses).
      </p>
      <div className="choices">
        {registry.interpreters.map((i) => (
          <label key={i.name}>
            <input
              type="checkbox"
              checked={chosen.includes(i.name)}
              onChange={(e) => setChosen((c) => (e.target.checked ? [...c, i.name] : c.filter((n) => n !== i.name)))}
            />{" "}
            {i.name}
          </label>
        ))}
        <button type="button" disabled={chosen.length === 0} onClick={() => props.onCompare(r.job, chosen)} data-testid="compare-button">
          Compare
        </button>
      </div>
      {props.compareError && (
        <p className="error" role="alert" data-testid="compare-error">
          {props.compareError}
        </p>
      )}
      {props.comparison && props.comparison.source === r.job && (
        <table className="compare" data-testid="comparison">
          <thead>
            <tr>
              <th>interpreter</th>
              <th>benign</th>
              <th>adversarial</th>
              <th>IoU</th>
              <th>L1</th>
              <th>Spearman</th>
            </tr>
          </thead>
          <tbody>
            {props.comparison.comparisons.map((c) => (
              <tr key={c.interpreter}>
                <th>{c.interpreter}</th>
                {c.error ? (
                  <td colSpan={5} className="bad">
                    {c.error}
                  </td>
                ) : (
                  <>
                    <td>{c.benign_map && <MapCanvas map={c.benign_map} image={r.benign_image} overlay={overlay} size={96} />}</td>
                    <td>{c.adversarial_map && <MapCanvas map={c.adversarial_map} image={r.adversarial_image} overlay={overlay} size={96} />}</td>
                    <td className="num">{formatCell(c.metrics?.iou_topk_mean)}</td>
                    <td className="num">{formatCell(c.metrics?.map_l1)}</td>
                    <td className="num">{formatCell(c.metrics?.spearman)}</td>
                  </>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
