import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import {
  type AttackResult,
  type BatchResult,
  type CompareResult,
  type DatasetImage,
  type DatasetInfo,
  type JobEvent,
  type JobStatus,
  type Registry,
  ApiError,
  api,
} from "../api/client";
import { type FormState, toBatchRequest, toRequest } from "../lib/params";
import { formatCell } from "../lib/table";
import { ProgressBar } from "./common";
import { ResultView } from "./ResultView";

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

function initialForm(reg: Registry): FormState {
  const model = reg.models.find((m) => m.name === "cifar10-resnet20") ?? reg.models[0];
  const attack = reg.attacks.find((a) => a.name === "pgd") ?? reg.attacks[0];
  return {
    model: model?.name ?? "",
    source: "dataset",
    index: 0,
    upload: null,
    interpreter: reg.interpreters.find((i) => i.name === "cam")?.name ?? reg.interpreters[0]?.name ?? "",
    attack: attack?.name ?? "",
    eps255: 8,
    steps: "",
    targeted: true,
    target: "",
    seed: 0,
    extra: {},
    surrogate: "",
  };
}

export function AttackLab({ registry, onOpenRun }: { registry: Registry; onOpenRun: (id: string) => void }) {
  const [form, setForm] = useState<FormState>(() => initialForm(registry));
  const [dataset, setDataset] = useState<DatasetInfo | null>(null);
  const [preview, setPreview] = useState<DatasetImage | null>(null);
  const [uploadPreview, setUploadPreview] = useState<string | null>(null);
  const [uploadError, setUploadError] = useState<string | null>(null);
  const [formError, setFormError] = useState<string | null>(null);
  const [jobs, setJobs] = useState<JobStatus[]>([]);
  const [result, setResult] = useState<AttackResult | null>(null);
  const [comparison, setComparison] = useState<CompareResult | null>(null);
  const [batchN, setBatchN] = useState(8);
  const [batch, setBatch] = useState<BatchResult | null>(null);

  const model = registry.models.find((m) => m.name === form.model);
  const attack = registry.attacks.find((a) => a.name === form.attack);
  const set = <K extends keyof FormState>(k: K, v: FormState[K]) => setForm((f) => ({ ...f, [k]: v }));

  useEffect(() => {
    if (!model) return;
    setDataset(null);
    api.dataset(model.dataset).then(setDataset, (e: unknown) =>
      setDataset({ name: model.dataset, classes: [], size: 0, error: message(e) }),
    );
  }, [model]);

  useEffect(() => {
    if (!dataset || dataset.size === 0 || form.source !== "dataset") return;
    if (form.index >= dataset.size) return;
    let live = true;
    api.datasetImage(dataset.name, form.index).then(
      (img) => live && setPreview(img),
      () => live && setPreview(null),
    );
    return () => {
      live = false;
    };
  }, [dataset, form.index, form.source]);


  const updateJob = useCallback((id: string, ev: JobEvent) => {
    setJobs((js) =>
      js.map((j) =>
        j.id === id
          ? {
              ...j,
              state: ev.state,
              error: ev.error ?? null,
              progress: {
                done: ev.done,
                total: ev.total,
                message: ev.message,
                fraction: ev.state === "done" ? 1 : ev.total ? ev.done / ev.total : 0,
              },
            }
          : j,
      ),
    );
  }, []);

  const fetchOutput = useCallback((job: Pick<JobStatus, "id" | "kind">) => {
    const fail = (e: unknown) => setFormError(message(e));
    if (job.kind === "attack") api.result(job.id).then(setResult, fail);
    else if (job.kind === "compare") api.comparison(job.id).then(setComparison, fail);
    else api.batch(job.id).then(setBatch, fail);
  }, []);

  const jobIds = useRef(new Set<string>());
  useEffect(() => {
    jobIds.current = new Set(jobs.map((j) => j.id));
  }, [jobs]);
  // jobs whose output this page shows when they finish, and the final state of ended jobs
  const wanted = useRef(new Set<string>());
  const ended = useRef(new Map<string, JobStatus["state"]>());
  const collect = useCallback(
    (id: string, kind: JobStatus["kind"], state: JobStatus["state"]) => {
      ended.current.set(id, state);
      if (!wanted.current.has(id)) return;
      wanted.current.delete(id);
      if (state === "done") fetchOutput({ id, kind });
    },
    [fetchOutput],
  );

  useEffect(() => {
    const sync = () =>
      api.jobs().then((js) => {
        setJobs(js);
        js.filter((j) => j.state !== "queued" && j.state !== "running").forEach((j) => collect(j.id, j.kind, j.state));
      }, () => undefined);
    const stop = api.events((name, ev) => {
      updateJob(ev.job, ev);
      if (!jobIds.current.has(ev.job)) void sync(); // a job submitted elsewhere (another tab, the API)
      if (name === "end") collect(ev.job, ev.kind, ev.state);
    }, sync);
    return stop;
  }, [updateJob, collect]);

  const track = (job: JobStatus) => {
    jobIds.current.add(job.id);
    setJobs((js) => [job, ...js.filter((j) => j.id !== job.id)]);
    const state = ended.current.get(job.id);
    wanted.current.add(job.id);
    if (state) collect(job.id, job.kind, state); // it ended before the response arrived
  };

  const run = async () => {
    setFormError(null);
    try {
      track(await api.submit(toRequest(form, attack)));
    } catch (e) {
      setFormError(message(e));
    }
  };

  const onUpload = async (file: File | undefined) => {
    setUploadError(null);
    setUploadPreview(null);
    set("upload", null);
    if (!file) return;
    try {
      const up = await api.upload(file, file.name);
      set("upload", up.id);
      setUploadPreview(up.image);
    } catch (e) {
      setUploadError(e instanceof ApiError ? e.message : `upload failed: ${message(e)}`);
    }
  };

  const showJob = (j: JobStatus) => {
    if (j.state === "done") fetchOutput(j);
  };

  const runBatch = async () => {
    setFormError(null);
    try {
      track(await api.submitBatch(toBatchRequest(form, attack, batchN)));
    } catch (e) {
      setFormError(message(e));
    }
  };

  const extraParams = useMemo(() => (attack?.params ?? []).filter((p) => p.name !== "steps"), [attack]);
  const stepsDefault = attack?.params.find((p) => p.name === "steps");
  const classes = dataset?.classes.length ? dataset.classes : Array.from({ length: model?.num_classes ?? 0 }, (_, i) => String(i));
  const maxIndex = Math.max(0, (dataset?.size ?? 1) - 1);

  return (
    <div className="lab">
      <form
        className="attack-form"
        onSubmit={(e) => {
          e.preventDefault();
          void run();
        }}
      >
        <h2>Attack</h2>
        <label>
          model
          <select value={form.model} onChange={(e) => set("model", e.target.value)} data-testid="model">
            {registry.models.map((m) => (
              <option key={m.name} value={m.name}>
                {m.name} ({m.dataset})
              </option>
            ))}
          </select>
        </label>
        <fieldset>
          <legend>image</legend>
          <label className="inline">
            <input type="radio" checked={form.source === "dataset"} onChange={() => set("source", "dataset")} /> {model?.dataset} test image
          </label>
          <label className="inline">
            <input type="radio" checked={form.source === "upload"} onChange={() => set("source", "upload")} data-testid="source-upload" /> upload
          </label>
          {form.source === "dataset" ? (
            <div className="row">
              <input
                type="number"
                min={0}
                max={maxIndex}
                value={form.index}
                onChange={(e) => set("index", Math.max(0, Math.min(maxIndex, Number(e.target.value) || 0)))}
                data-testid="index"
                aria-label="image index"
              />
              <button type="button" onClick={() => set("index", Math.floor(Math.random() * (maxIndex + 1)))}>
                random
              </button>
              {preview && preview.dataset === dataset?.name && (
                <span className="preview">
                  <img src={preview.image} alt="selected" /> {preview.label_name}
                </span>
              )}
              {dataset?.error && <p className="error">{dataset.error}</p>}
            </div>
          ) : (
            <div className="row">
              <input type="file" accept="image/*" onChange={(e) => void onUpload(e.target.files?.[0])} data-testid="upload" />
              {uploadPreview && <img className="preview" src={uploadPreview} alt="uploaded" />}
              {uploadError && (
                <p className="error" role="alert" data-testid="upload-error">
                  {uploadError}
                </p>
              )}
            </div>
          )}
        </fieldset>
        <label>
          interpreter
          <select value={form.interpreter} onChange={(e) => set("interpreter", e.target.value)} data-testid="interpreter">
            {registry.interpreters.map((i) => (
              <option key={i.name} value={i.name} title={i.doc}>
                {i.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          attack
          <select value={form.attack} onChange={(e) => setForm((f) => ({ ...f, attack: e.target.value, extra: {} }))} data-testid="attack">
            {registry.attacks.map((a) => (
              <option key={a.name} value={a.name} title={a.doc}>
                {a.name}
                {a.black_box ? " (black-box)" : ""}
              </option>
            ))}
          </select>
        </label>
        {attack?.doc && <p className="muted small">{attack.doc}</p>}
        {attack?.black_box && (
          <label>
            surrogate (the attacker&apos;s own model)
            <select value={form.surrogate} onChange={(e) => set("surrogate", e.target.value)} data-testid="surrogate">
              <option value="">default (another {model?.dataset} model)</option>
              {registry.models
                .filter((m) => m.dataset === model?.dataset)
                .map((m) => (
                  <option key={m.name} value={m.name}>
                    {m.name}
                  </option>
                ))}
            </select>
          </label>
        )}
        <label>
          ε (in 1/255)
          <input
            type="number"
            step="0.5"
            min={0.5}
            max={registry.limits.max_eps ? registry.limits.max_eps * 255 : 127}
            value={form.eps255}
            onChange={(e) => set("eps255", Number(e.target.value))}
            data-testid="eps"
          />
          <span className="muted small">= {(form.eps255 / 255).toFixed(4)}</span>
        </label>
        {stepsDefault && (
          <label>
            steps
            <input
              type="number"
              min={1}
              placeholder={stepsDefault.default === null ? "default" : String(stepsDefault.default)}
              value={form.steps}
              onChange={(e) => set("steps", e.target.value)}
              data-testid="steps"
            />
          </label>
        )}
        <label className="inline">
          <input type="checkbox" checked={form.targeted} onChange={(e) => set("targeted", e.target.checked)} /> targeted
        </label>
        {form.targeted && (
          <label>
            target class
            <select value={form.target} onChange={(e) => set("target", e.target.value)} data-testid="target">
              <option value="">random (seeded)</option>
              {classes.map((c, i) => (
                <option key={c} value={String(i)}>
                  {c}
                </option>
              ))}
            </select>
          </label>
        )}
        <label>
          seed
          <input type="number" min={0} value={form.seed} onChange={(e) => set("seed", Math.max(0, Number(e.target.value) || 0))} />
        </label>
        {extraParams.length > 0 && (
          <details>
            <summary>more {form.attack} parameters</summary>
            {extraParams.map((p) => (
              <label key={p.name}>
                {p.name}
                <input
                  placeholder={p.default === null ? "default" : String(p.default)}
                  value={form.extra[p.name] ?? ""}
                  onChange={(e) => setForm((f) => ({ ...f, extra: { ...f.extra, [p.name]: e.target.value } }))}
                />
              </label>
            ))}
          </details>
        )}
        <button type="submit" className="primary" data-testid="run">
          Run attack
        </button>
        <div className="batch">
          <label className="inline">
            or on
            <input type="number" min={1} max={1000} value={batchN} onChange={(e) => setBatchN(Math.max(1, Math.min(1000, Number(e.target.value) || 1)))} data-testid="batch-n" />
            seeded images
          </label>
          <button type="button" onClick={() => void runBatch()} data-testid="run-batch" title="saved as a run under --runs DIR/lab/">
            Run batch
          </button>
        </div>
                {formError && (
          <p className="error" role="alert" data-testid="form-error">
            {formError}
          </p>
        )}
      </form>
      <div className="main">
        <section className="jobs">
          <h2>Jobs</h2>
          {jobs.length === 0 && <p className="muted">No jobs yet: set up an attack and press Run.</p>}
          <ul data-testid="jobs">
            {jobs.map((j) => (
              <li key={j.id} className={`job ${j.state}`} data-job={j.id}>
                <button type="button" className="link" onClick={() => showJob(j)} disabled={j.state !== "done"}>
                  {j.label}
                </button>
                <span className="state" data-testid={`job-state-${j.id}`}>
                  {j.state}
                </span>
                {(j.state === "running" || j.state === "queued") && (
                  <>
                    <ProgressBar fraction={j.progress.fraction} label={j.state === "queued" ? "queued" : `${j.progress.message} ${j.progress.done}/${j.progress.total}`} />
                    <button type="button" onClick={() => void api.cancel(j.id).catch(() => undefined)} data-testid={`cancel-${j.id}`}>
                      cancel
                    </button>
                  </>
                )}
                {j.error && <span className="error">{j.error}</span>}
              </li>
            ))}
          </ul>
        </section>
        {batch && (
          <section className="batch-result" data-testid="batch-result">
            <h2>Batch saved as run {batch.run_id}</h2>
            <p>
              {formatCell(batch.summary.n)} images · success rate {formatCell(batch.summary.asr)} · top-k IoU {formatCell(batch.summary.iou_topk_mean)} ·
              map L1 {formatCell(batch.summary.map_l1_mean)}{" "}
              <button type="button" onClick={() => onOpenRun(batch.run_id)} data-testid="open-run">
                open in Runs
              </button>
            </p>
          </section>
        )}
        {result && (
          <ResultView
            result={result}
            registry={registry}
            comparison={comparison}
            onCompare={(id, names) => {
              setFormError(null);
              api.compare(id, names).then(track, (e: unknown) => setFormError(message(e)));
            }}
          />
        )}
      </div>
    </div>
  );
}
