import type { Dispatch, SetStateAction } from "react";
import type { ModelInfo, Registry } from "../api/client";
import type { FormState } from "../lib/params";
import { ParamField } from "./ParamField";

/** Interpreter, attack and its hyperparameters: surrogate, ε, steps, target, seed and the rest. */
export function AttackSettings(props: {
  registry: Registry;
  form: FormState;
  setForm: Dispatch<SetStateAction<FormState>>;
  model: ModelInfo | undefined;
  classes: string[];
  /** a server error that names one of the parameters: shown under it */
  paramError?: { name: string; message: string } | null;
}) {
  const { registry, form, setForm, model, classes } = props;
  const attack = registry.attacks.find((a) => a.name === form.attack);
  const set = <K extends keyof FormState>(k: K, v: FormState[K]) => setForm((f) => ({ ...f, [k]: v }));
  const others = (attack?.params ?? []).filter((p) => p.name !== "steps");
  const main = others.filter((p) => !p.advanced);
  const advanced = others.filter((p) => p.advanced);
  const stepsInfo = attack?.params.find((p) => p.name === "steps");
  const serverError = (name: string) => (props.paramError?.name === name ? props.paramError.message : null);
  const field = (p: NonNullable<typeof attack>["params"][number]) => (
    <ParamField
      key={p.name}
      p={p}
      text={form.extra[p.name] ?? ""}
      onChange={(t) => setForm((f) => ({ ...f, extra: { ...f.extra, [p.name]: t } }))}
      serverError={serverError(p.name)}
    />
  );
  const eps = form.eps255 / 255;
  return (
    <>
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
            .filter((m) => m.dataset && m.dataset === model?.dataset)
            .map((m) => (
              <option key={m.name} value={m.name}>
                {m.name}
              </option>
            ))}
        </select>
      </label>
    )}
    <div className="param">
      <label htmlFor="param-eps">ε (in 1/255)</label>
      <input
        id="param-eps"
        type="number"
        step="0.5"
        min={0.5}
        max={registry.limits.max_eps ? registry.limits.max_eps * 255 : 127}
        value={form.eps255}
        onChange={(e) => set("eps255", Number(e.target.value))}
        aria-describedby="param-eps-help"
        data-testid="eps"
      />
      <span className="muted small conversion">
        {form.eps255}/255 = {Number(eps.toPrecision(3))}
      </span>
      <span className="help" id="param-eps-help">
        L∞ budget: the largest change allowed to any pixel
      </span>
    </div>
    {stepsInfo && (
      <ParamField p={stepsInfo} text={form.steps} onChange={(t) => set("steps", t)} serverError={serverError("steps")} testId="steps" />
    )}
    <label className="inline">
      <input type="checkbox" checked={form.targeted} onChange={(e) => set("targeted", e.target.checked)} data-testid="targeted" /> targeted
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
      <input type="number" min={0} data-testid="seed" value={form.seed} onChange={(e) => set("seed", Math.max(0, Number(e.target.value) || 0))} />
    </label>
    {main.map(field)}
    {advanced.length > 0 && (
      <details className="advanced" open={advanced.some((p) => serverError(p.name)) || undefined}>
        <summary>
          advanced {form.attack} parameters ({advanced.length})
        </summary>
        <p className="muted small">Left empty, each keeps the attack&apos;s default (shown greyed).</p>
        {advanced.map(field)}
      </details>
    )}
    </>
  );
}
