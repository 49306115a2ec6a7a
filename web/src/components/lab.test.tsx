import type { ReactElement } from "react";
import { renderToString as render } from "react-dom/server";
import { describe, expect, it } from "vitest";
import type { BatchResult, JobStatus, ModelInfo, Registry } from "../api/client";
import { param } from "../lib/fixtures";
import { applyEvent } from "../lib/useJobs";
import { AttackForm, classNames, initialForm, modelLabel } from "./AttackForm";
import { AttackSettings } from "./AttackSettings";
import { BatchSummary } from "./BatchSummary";
import { ResizeNote } from "./ImagePicker";
import { JobList } from "./JobList";

const renderToString = (el: ReactElement) => render(el).replaceAll("<!-- -->", "");

const zoo: ModelInfo = {
  name: "cifar10-resnet20",
  spec: "cifar10-resnet20",
  dataset: "cifar10",
  datasets: ["cifar10"],
  num_classes: 10,
  input_size: [3, 32, 32],
  weights: null,
  notes: "",
  classes: null,
};
const mine: ModelInfo = {
  name: "mine",
  spec: "net.py:build",
  dataset: null,
  datasets: [],
  num_classes: 3,
  input_size: [1, 64, 64],
  weights: "random",
  notes: "",
  classes: ["a", "b", "c"],
};
const registry: Registry = {
  version: "0",
  device: "cpu",
  models: [zoo, mine, { ...mine, name: "mine-folders", datasets: ["folder:pets", "folder:more"] }],
  datasets: ["cifar10", "folder:pets", "folder:more"],
  interpreters: [{ name: "cam", doc: "", differentiable: true, stochastic: false }],
  attacks: [{ name: "pgd", doc: "", needs_interpreter: false, black_box: false, params: [param("steps", "int", 10, { min: 1 })] }],
  limits: {},
};

const job = (id: string, state: JobStatus["state"], extra: Partial<JobStatus> = {}): JobStatus => ({
  id,
  kind: "attack",
  state,
  error: null,
  label: `job ${id}`,
  created: 0,
  progress: { done: 3, total: 10, message: "attacking", fraction: 0.3 },
  ...extra,
});

const form = (reg: Registry, model: string) => renderToString(
  <AttackForm registry={reg} form={{ ...initialForm(reg), model, ...(model === "cifar10-resnet20" ? {} : { source: "upload" as const }) }}
    setForm={() => undefined} onRun={() => undefined} onRunBatch={() => undefined} error={null} />,
);

describe("AttackForm", () => {
  it("offers a zoo model its dataset's images and batches", () => {
    const html = form(registry, "cifar10-resnet20");
    expect(html).toContain("cifar10 test image");
    expect(html).toContain('data-testid="index"');
    expect(html).not.toContain('data-testid="dataset"');
    expect(html).toMatch(/<button type="button" data-testid="run-batch" title="saved as a run/);
  });
  it("offers a model without datasets uploads only, and no batches", () => {
    const html = form(registry, "mine");
    expect(html).not.toContain('data-testid="source-dataset"');
    expect(html).toContain('data-testid="upload"');
    expect(html).toMatch(/data-testid="run-batch" disabled=""/);
    expect(html).toContain(">mine (1×64×64, random weights)</option>");
  });
  it("lets the user choose among a model's image folders", () => {
    const html = renderToString(
      <AttackForm registry={registry} form={{ ...initialForm(registry), model: "mine-folders", source: "dataset" }}
        setForm={() => undefined} onRun={() => undefined} onRunBatch={() => undefined} error={null} />,
    );
    expect(html).toContain('data-testid="dataset"');
    expect(html).toContain('<option value="folder:more">folder:more</option>');
    expect(html).toContain(">a</option>"); // the model's own class names as targets
  });
  it("shows an error under the button that caused it, and under the parameter it names", () => {
    const withError = (error: { where: "run" | "batch"; message: string }) => renderToString(
      <AttackForm registry={registry} form={initialForm(registry)} setForm={() => undefined} onRun={() => undefined}
        onRunBatch={() => undefined} error={error} />,
    );
    const batch = withError({ where: "batch", message: "no GPU here" });
    expect(batch).toContain('data-testid="batch-error">no GPU here');
    expect(batch).not.toContain('data-testid="form-error"');
    expect(batch.indexOf("batch-error")).toBeGreaterThan(batch.indexOf('data-testid="run-batch"'));
    const run = withError({ where: "run", message: "steps = 20000 is beyond the lab's limit" });
    expect(run).toContain('data-testid="form-error">steps = 20000');
    expect(run).toContain('data-testid="param-steps-error">steps = 20000'); // and under the steps field
    expect(run.indexOf("param-steps-error")).toBeLessThan(run.indexOf('data-testid="run"'));
  });
  it("starts on uploads when the default model has no dataset", () => {
    const reg = { ...registry, models: [mine] };
    expect(initialForm(reg)).toMatchObject({ model: "mine", source: "upload", dataset: "" });
    expect(initialForm(registry)).toMatchObject({ model: "cifar10-resnet20", source: "dataset" });
  });
});

it("labels models by dataset, or by input size and weights", () => {
  expect(modelLabel(zoo)).toBe("cifar10-resnet20 (cifar10)");
  expect(modelLabel({ ...zoo, name: "r20" })).toBe("r20 (cifar10-resnet20, cifar10)");
  expect(modelLabel({ ...mine, weights: "w.safetensors" })).toBe("mine (1×64×64, w.safetensors)");
});

it("takes target names from the model, then from a dataset of the same class count, else numbers", () => {
  const ds = (classes: string[]) => ({ name: "d", classes, size: 1 });
  expect(classNames(mine, ds(["x", "y"]))).toEqual(["a", "b", "c"]);
  expect(classNames({ ...mine, classes: null }, ds(["x", "y", "z"]))).toEqual(["x", "y", "z"]);
  expect(classNames({ ...mine, classes: null }, ds(["x", "y"]))).toEqual(["0", "1", "2"]);
});

it("notes how an upload is fitted to the model's input", () => {
  expect(renderToString(<ResizeNote upload={{ width: 90, height: 50 }} model={mine} />)).toContain(
    "resized from 90×50 to 64×64, converted to grayscale",
  );
  expect(renderToString(<ResizeNote upload={{ width: 32, height: 32 }} model={zoo} />)).toBe("");
});

describe("JobList", () => {
  const html = renderToString(
    <JobList
      jobs={[job("r", "running"), job("q", "queued"), job("d", "done"), job("f", "failed", { error: "boom" })]}
      onShow={() => undefined}
      onCancel={() => undefined}
    />,
  );
  it("shows progress and a cancel button for active jobs only", () => {
    expect(html).toContain("attacking 3/10");
    expect(html).toContain('data-testid="cancel-r"');
    expect(html).toContain('data-testid="cancel-q"');
    expect(html).not.toContain('data-testid="cancel-d"');
    expect(html.match(/role="progressbar"/g)).toHaveLength(2);
  });
  it("lets only finished jobs be opened, and shows errors", () => {
    expect(html).toMatch(/data-job="d"><button type="button" class="link">job d/);
    expect(html).toMatch(/data-job="f"><button type="button" class="link" disabled="">job f/);
    expect(html).toContain('<span class="error">boom</span>');
  });
  it("says so when there are no jobs", () => {
    expect(renderToString(<JobList jobs={[]} onShow={() => undefined} onCancel={() => undefined} />)).toContain("No jobs yet");
  });
});

it("summarises a batch and links its run", () => {
  const batch: BatchResult = { job: "b", run_id: "lab/x", path: "/r/lab/x", summary: { n: 2, asr: 0.5, iou_topk_mean: 0.25, map_l1_mean: 3 } };
  const html = renderToString(<BatchSummary batch={batch} onOpenRun={() => undefined} />);
  expect(html).toContain("Batch saved as run lab/x");
  expect(html).toContain("success rate 0.5");
});

describe("applyEvent", () => {
  const j = job("r", "running");
  it("takes the event's state and progress", () => {
    expect(applyEvent(j, { job: "r", kind: "attack", state: "running", done: 5, total: 20, message: "attacking" }).progress).toEqual({
      done: 5,
      total: 20,
      message: "attacking",
      fraction: 0.25,
    });
  });
  it("is complete when done, at zero without a total, and keeps the error", () => {
    expect(applyEvent(j, { job: "r", kind: "attack", state: "done", done: 0, total: 0, message: "" }).progress.fraction).toBe(1);
    const failed = applyEvent(j, { job: "r", kind: "attack", state: "failed", done: 0, total: 0, message: "", error: "bad" });
    expect(failed.progress.fraction).toBe(0);
    expect(failed).toMatchObject({ state: "failed", error: "bad", label: "job r" });
  });
});

describe("AttackSettings", () => {
  const reg: Registry = {
    ...registry,
    models: [zoo, { ...zoo, name: "cifar10-resnet32", spec: "cifar10-resnet32" }, { ...zoo, name: "fmnist-cnn", spec: "fmnist-cnn", dataset: "fashion-mnist" }, mine],
    attacks: [...registry.attacks, { name: "quscore", doc: "", needs_interpreter: true, black_box: true, params: [param("pop_size", "int", 5, { min: 2 }), param("lambda_int", "float", 0.001, { advanced: true }),
      param("refine", "bool", null, { advanced: true, nullable: true, none_means: "the preset's value" })] }],
  };
  const settings = (model: ModelInfo, attack: string) =>
    renderToString(
      <AttackSettings registry={reg} form={{ ...initialForm(reg), model: model.name, attack }} setForm={() => undefined} model={model} classes={["x"]} />,
    );
  it("offers a black-box attack's surrogates among the models trained on the victim's dataset", () => {
    const html = settings(zoo, "quscore");
    expect(html).toContain('<option value="cifar10-resnet32">');
    expect(html).not.toContain('<option value="fmnist-cnn">');
    expect(html).not.toContain('data-testid="steps"'); // quscore has no steps
    expect(html).toContain("advanced quscore parameters (2)");
    expect(html).toMatch(/<details class="advanced">[^]*lambda_int[^]*<\/details>/); // folded
    expect(html.indexOf("pop_size")).toBeLessThan(html.indexOf("<details")); // shown
    expect(html).toContain('<option value="" selected="">default (the preset&#x27;s value)</option>');
    expect(html).toContain("what pop_size does");
    expect(settings(mine, "quscore")).not.toMatch(/data-testid="surrogate">[^]*<option value="c/);
  });
  it("shows steps, no surrogate, for a white-box attack", () => {
    const html = settings(zoo, "pgd");
    expect(html).toContain('data-testid="steps"');
    expect(html).not.toContain('data-testid="surrogate"');
  });
});
