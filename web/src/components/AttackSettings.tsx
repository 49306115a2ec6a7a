import type { Dispatch, SetStateAction } from "react";
import type { ModelInfo, Registry } from "../api/client";
import type { FormState } from "../lib/params";

/** Interpreter, attack and its hyperparameters: surrogate, ε, steps, target, seed and the rest. */
export function AttackSettings(props: {
  registry: Registry;
  form: FormState;
  setForm: Dispatch<SetStateAction<FormState>>;
  model: ModelInfo | undefined;
  classes: string[];
}) {
  const { registry, form, setForm, model, classes } = props;
  const attack = registry.attacks.find((a) => a.name === form.attack);
  const set = <K extends keyof FormState>(k: K, v: FormState[K]) => setForm((f) => ({ ...f, [k]: v }));
  const extraParams = (attack?.params ?? []).filter((p) => p.name !== "steps");
  const stepsDefault = attack?.params.find((p) => p.name === "steps");
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
    </>
  );
}
