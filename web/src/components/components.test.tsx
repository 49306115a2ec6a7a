import type { ReactElement } from "react";
import { renderToString as render } from "react-dom/server";
import { describe, expect, it } from "vitest";
import type { AttackResult, Registry, RunInfo } from "../api/client";
import { ResultView } from "./ResultView";
import { runRow } from "./RunsView";
import { LineChart, MapCanvas, ScatterChart, SortableTable } from "./common";

/** Server-rendered HTML without React's text separators. */
const renderToString = (el: ReactElement) => render(el).replaceAll("<!-- -->", "");

const registry: Registry = {
  version: "0.1.0",
  device: "cpu",
  models: [],
  datasets: ["cifar10"],
  interpreters: [
    { name: "cam", doc: "", differentiable: true, stochastic: false },
    { name: "grad", doc: "", differentiable: true, stochastic: false },
  ],
  attacks: [],
  limits: {},
};

const result: AttackResult = {
  job: "j1",
  model: "cifar10-resnet20",
  dataset: "cifar10",
  index: 7,
  upload: null,
  interpreter: "cam",
  attack: "pgd",
  targeted: true,
  params: { eps: 0.03 },
  classes: ["airplane", "automobile"],
  true_label: 0,
  attacked_label: 1,
  benign: { label: 0, name: "airplane", confidence: 0.93 },
  adversarial: { label: 1, name: "automobile", confidence: 0.999 },
  success: true,
  benign_image: "data:image/png;base64,AA==",
  adversarial_image: "data:image/png;base64,AA==",
  perturbation_image: "data:image/png;base64,AA==",
  perturbation_scale: 16,
  benign_map: { width: 2, height: 2, values: [0, 0.5, 1, 0] },
  adversarial_map: { width: 2, height: 2, values: [0, 0.5, 1, 0] },
  metrics: { iou_topk_mean: 0.4321, map_l1: 12.5 },
  iou_topk: { "0.05": 0.2, "0.5": 0.6 },
  queries: null,
  query_history: null,
  loss_history: [3, 1],
  seconds: 0.2,
};

describe("ResultView", () => {
  it("shows predictions, images, maps and metrics", () => {
    const html = renderToString(<ResultView result={result} registry={registry} comparison={null} onCompare={() => undefined} />);
    expect(html).toContain("attack succeeded");
    expect(html).toContain("adversarial: automobile 99.9%");
    expect(html).toContain('data-testid="metric-iou_topk_mean">0.4321');
    expect(html).toContain('data-testid="benign-map"');
    expect(html).toContain("perturbation ×16");
    expect(html).not.toContain('data-testid="metric-queries"');
    expect(html).not.toContain('data-testid="query-history"');
  });
  it("shows query counts and their history for a black-box attack", () => {
    const bb = { ...result, queries: 350, query_history: [5, 105, 350] };
    const html = renderToString(<ResultView result={bb} registry={registry} comparison={null} onCompare={() => undefined} />);
    expect(html).toContain('data-testid="metric-queries">350');
    expect(html).toContain('data-testid="query-history"');
  });
  it("lists each interpreter's comparison or its error", () => {
    const comparison = {
      job: "c1",
      source: "j1",
      comparisons: [
        { interpreter: "cam", benign_map: result.benign_map, adversarial_map: result.adversarial_map, metrics: { iou_topk_mean: 0.5 } },
        { interpreter: "rts", error: "no trained RTS" },
      ],
    };
    const html = renderToString(<ResultView result={result} registry={registry} comparison={comparison} onCompare={() => undefined} />);
    expect(html).toContain("no trained RTS");
    expect(html).toContain('data-testid="comparison"');
  });
});

describe("SortableTable and LineChart", () => {
  it("renders rows in the initial sort order", () => {
    const html = renderToString(<SortableTable rows={[{ id: "b" }, { id: "a" }]} initialSort="id" />);
    expect(html.indexOf(">a<")).toBeLessThan(html.indexOf(">b<"));
    expect(html).toContain("id ▲");
    expect(html).toContain('tabindex="0" role="region"'); // the scroll region takes keyboard focus
  });
  it("puts readable labels and column groups over the columns, and opens rows with the keyboard", () => {
    const html = renderToString(
      <SortableTable rows={[{ id: "a", asr: 0.5, eps: 8 / 255 }]} labels={{ asr: "ASR", eps: "ε (/255)" }} format={{ eps: (v) => String(Math.round(Number(v) * 255)) }}
        groups={[{ label: "effect", columns: ["asr"] }]} onRowClick={() => undefined} rowLabel={(r) => String(r.id)} />,
    );
    expect(html).toContain('<th colSpan="1" scope="colgroup" class="group">effect</th>');
    expect(html).toMatch(/<button type="button">ASR<\/button>/);
    expect(html).toContain(">8</td>");
    expect(html).toContain('tabindex="0" aria-label="open a"');
  });
  it("draws one point per item in a scatter plot, with its name", () => {
    const svg = renderToString(<ScatterChart points={[{ name: "run-a", x: 0.5, y: 1 }, { name: "run-b", x: 0.2, y: 0.4 }]} xLabel="IoU" yLabel="ASR" xMax={1} yMax={1} />);
    expect(svg.match(/<circle/g)?.length).toBe(2);
    expect(svg).toContain("run-a: IoU 0.5, ASR 1");
  });
  it("draws nothing without points and a polyline with them", () => {
    expect(renderToString(<LineChart series={[]} xLabel="x" yLabel="y" />)).toBe("");
    const svg = renderToString(<LineChart series={[{ name: "s", points: [{ x: 0, y: 0 }, { x: 1, y: 1 }] }]} xLabel="x" yLabel="y" />);
    expect(svg).toContain("<polyline");
  });
});

it("turns a run into a table row: id, configuration, size and summary", () => {
  const run: RunInfo = { id: "r", path: "/p", n_records: 4, summary: { asr: 0.5 }, config: { attack: "pgd" }, images: [], has_queries: false };
  expect(runRow(run)).toEqual({ id: "r", attack: "pgd", n: 4, asr: 0.5, setup: "pgd" });
  const bench: RunInfo = { ...run, config: { attack: "quscore", interpreter: "cam", model: "m", eps: 8 / 255, defense: "jpeg" } };
  expect(runRow(bench).setup).toBe("quscore × cam on m (defense jpeg, ε 8/255)");
});

it("notes a constant map (e.g. an all-zero MASK map)", () => {
  const zero = renderToString(<MapCanvas map={{ width: 2, height: 2, values: [0, 0, 0, 0] }} overlay={false} testId="m" />);
  expect(zero).toContain('data-testid="m-note"');
  expect(zero).toContain("constant map (all 0)");
  expect(renderToString(<MapCanvas map={{ width: 2, height: 2, values: [0, 0.5, 1, 0] }} overlay={false} />)).not.toContain("constant map");
});
