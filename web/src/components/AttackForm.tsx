import { type Dispatch, type SetStateAction, useState } from "react";
import type { DatasetInfo, ModelInfo, Registry } from "../api/client";
import { type FormState, formErrors, paramOfError } from "../lib/params";
import { useDataset } from "../lib/useDataset";
import { AttackSettings } from "./AttackSettings";
import { ImagePicker } from "./ImagePicker";

export function initialForm(reg: Registry): FormState {
  const model = reg.models.find((m) => m.name === "cifar10-resnet20") ?? reg.models[0];
  const attack = reg.attacks.find((a) => a.name === "pgd") ?? reg.attacks[0];
  return {
    model: model?.name ?? "",
    source: model && model.datasets.length === 0 ? "upload" : "dataset",
    dataset: "",
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

/** "cifar10-resnet20 (cifar10)", "mine (1×64×64, random weights)". */
export function modelLabel(m: ModelInfo): string {
  if (m.dataset) return m.spec === m.name ? `${m.name} (${m.dataset})` : `${m.name} (${m.spec}, ${m.dataset})`;
  const detail = [m.input_size.join("×"), m.weights === "random" ? "random weights" : m.weights].filter(Boolean);
  return `${m.name} (${detail.join(", ")})`;
}

/** Target class names: the model's own, else its dataset's, else numbers. */
export function classNames(model: ModelInfo | undefined, dataset: DatasetInfo | null): string[] {
  if (model?.classes?.length) return model.classes;
  if (dataset?.classes.length && dataset.classes.length === model?.num_classes) return dataset.classes;
  return Array.from({ length: model?.num_classes ?? 0 }, (_, i) => String(i));
}

/** An error and the control whose action caused it (it is shown there). */
export interface LabError {
  where: "run" | "batch" | "compare" | "jobs";
  message: string;
}

/** The attack's set-up: model, image, interpreter, attack and its hyperparameters; run buttons. */
export function AttackForm(props: {
  registry: Registry;
  form: FormState;
  setForm: Dispatch<SetStateAction<FormState>>;
  onRun: () => void;
  onRunBatch: (n: number) => void;
  error: LabError | null;
}) {
  const { registry, form, setForm, error } = props;
  const [batchN, setBatchN] = useState(8);
  const [blocked, setBlocked] = useState<"run" | "batch" | null>(null);
  const attack = registry.attacks.find((a) => a.name === form.attack);
  const invalid = Object.values(formErrors(form, attack));
  // client-side checks first: a run with an invalid parameter is not sent
  const attempt = (where: "run" | "batch", go: () => void) => {
    setBlocked(invalid.length ? where : null);
    if (!invalid.length) go();
  };
  const named = error && (error.where === "run" || error.where === "batch") ? paramOfError(error.message, attack) : null;
  const messageAt = (where: "run" | "batch") =>
    blocked === where && invalid.length
      ? `fix ${invalid.length === 1 ? "this parameter" : `these ${invalid.length} parameters`} first: ${invalid.join("; ")}`
      : error?.where === where
        ? error.message
        : null;
  const model = registry.models.find((m) => m.name === form.model);
  const dataset = useDataset(form.dataset || model?.datasets[0]);
  const set = <K extends keyof FormState>(k: K, v: FormState[K]) => setForm((f) => ({ ...f, [k]: v }));
  const classes = classNames(model, dataset);
  // batches draw seeded images of a zoo model's own dataset (the server refuses the others)
  const batchable = !!model?.dataset && !model.weights && model.spec === model.name;
  const chooseModel = (name: string) => {
    const m = registry.models.find((x) => x.name === name);
    setForm((f) => ({ ...f, model: name, dataset: "", target: "", source: m && m.datasets.length === 0 ? "upload" : f.source }));
  };

  return (
    <form
      className="attack-form"
      onSubmit={(e) => {
        e.preventDefault();
        attempt("run", props.onRun);
      }}
    >
      <h2>Attack</h2>
      <label>
        model
        <select value={form.model} onChange={(e) => chooseModel(e.target.value)} data-testid="model">
          {registry.models.map((m) => (
            <option key={m.name} value={m.name}>
              {modelLabel(m)}
            </option>
          ))}
        </select>
      </label>
      <ImagePicker form={form} set={set} model={model} dataset={dataset} />
      <AttackSettings
        registry={registry}
        form={form}
        setForm={setForm}
        model={model}
        classes={classes}
        paramError={named && error ? { name: named, message: error.message } : null}
      />
      <button type="submit" className="primary" data-testid="run" aria-describedby={messageAt("run") ? "run-error" : undefined}>
        Run attack
      </button>
      {messageAt("run") && (
        <p className="error" role="alert" id="run-error" data-testid="form-error">
          {messageAt("run")}
        </p>
      )}
      <div className="batch">
        <label className="inline">
          or on
          <input
            type="number"
            min={1}
            max={1000}
            value={batchN}
            onChange={(e) => setBatchN(Math.max(1, Math.min(1000, Number(e.target.value) || 1)))}
            data-testid="batch-n"
          />
          seeded images
        </label>
        <button
          type="button"
          onClick={() => attempt("batch", () => props.onRunBatch(batchN))}
          data-testid="run-batch"
          disabled={!batchable}
          title={batchable ? "saved as a run under --runs DIR/lab/" : "batches take zoo models on their own dataset"}
        >
          Run batch
        </button>
      </div>
      {messageAt("batch") && (
        <p className="error" role="alert" data-testid="batch-error">
          {messageAt("batch")}
        </p>
      )}
    </form>
  );
}
