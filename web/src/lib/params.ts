// The attack form's state <-> the API's AttackRequest.
import type { AttackInfo, AttackRequest, BatchRequest, ParamInfo, ParamValue } from "../api/client";

export interface FormState {
  model: string;
  source: "dataset" | "upload";
  dataset: string; // one of the model's datasets; empty: its first
  index: number;
  upload: string | null;
  interpreter: string;
  attack: string;
  eps255: number; // the budget in 1/255 units, as papers write it
  steps: string; // empty: the attack's default
  targeted: boolean;
  target: string; // empty: a seeded random class
  seed: number;
  extra: Record<string, string>; // other hyperparameters, as typed (pixel budgets in 1/255); empty: default
  surrogate: string; // black-box attacks: empty = the server's default
}

/** Parse a typed hyperparameter: numbers, true/false, null/empty (-> omitted), else the string. */
export function parseValue(text: string): ParamValue | undefined {
  const t = text.trim();
  if (t === "") return undefined;
  if (t === "true" || t === "false") return t === "true";
  if (t === "null" || t === "none" || t === "None") return null;
  if (/^[-+]?\d+$/.test(t)) return Number.parseInt(t, 10);
  if (/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(t)) return Number.parseFloat(t);
  const frac = /^(\d+(?:\.\d+)?)\s*\/\s*(\d+(?:\.\d+)?)$/.exec(t);
  if (frac) return Number(frac[1]) / Number(frac[2]);
  return t;
}

/** Pixel budgets and steps are typed in 1/255 (as papers write them) and sent in [0, 1] units. */
export const isPixel = (p: Pick<ParamInfo, "unit">) => p.unit === "1/255";

/** A typed parameter's value from its text: undefined = the attack's default (nothing sent). */
export function paramValue(p: ParamInfo, text: string | undefined): ParamValue | undefined {
  const t = (text ?? "").trim();
  if (t === "") return undefined;
  if (p.kind === "bool") return t === "true";
  if (p.kind === "choice" || p.kind === "string") return t;
  const v = parseValue(t);
  if (typeof v !== "number") return v; // refused by paramError before it is sent
  return isPixel(p) ? v / 255 : v;
}

/** Why a typed value is not valid for the parameter, or null (empty is the default: valid). */
export function paramError(p: ParamInfo, text: string | undefined): string | null {
  const v = paramValue(p, text);
  if (v === undefined || p.kind === "bool" || p.kind === "choice" || p.kind === "string") return null;
  if (typeof v !== "number" || !Number.isFinite(v)) return `${p.name} must be a number`;
  if (p.kind === "int" && !Number.isInteger(v)) return `${p.name} must be a whole number`;
  const scale = isPixel(p) ? 255 : 1;
  const unit = isPixel(p) ? "/255" : "";
  const show = (x: number) => `${Number((x * scale).toPrecision(4))}${unit}`;
  if (p.min !== null && p.min !== undefined && (v < p.min || (p.min_exclusive && v === p.min)))
    return `${p.name} must be ${p.min_exclusive ? ">" : "≥"} ${show(p.min)}`;
  if (p.max !== null && p.max !== undefined && (v > p.max || (p.max_exclusive && v === p.max)))
    return `${p.name} must be ${p.max_exclusive ? "<" : "≤"} ${show(p.max)}`;
  return null;
}

/** The default as the form shows it: pixel budgets in 1/255, None as what it stands for. */
export function defaultText(p: ParamInfo): string {
  if (p.default === null || p.default === undefined) return `default: ${p.none_means ?? "none"}`;
  if (typeof p.default === "number" && isPixel(p)) return String(Number((p.default * 255).toPrecision(4)));
  if (typeof p.default === "boolean") return p.default ? "yes" : "no";
  return String(p.default);
}

/** Errors of the typed parameters (and steps), by parameter name; empty when all are valid. */
export function formErrors(form: FormState, attack: AttackInfo | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of attack?.params ?? []) {
    const e = paramError(p, p.name === "steps" ? form.steps : form.extra[p.name]);
    if (e) out[p.name] = e;
  }
  return out;
}

/** The parameter a server error names (the longest name that appears as a word), else null. */
export function paramOfError(message: string, attack: AttackInfo | undefined): string | null {
  const names = (attack?.params ?? []).map((p) => p.name).sort((a, b) => b.length - a.length);
  return names.find((n) => new RegExp(`(^|[^A-Za-z0-9_])${n.replace(/[+]/g, "\\+")}([^A-Za-z0-9_]|$)`).test(message)) ?? null;
}

/** The request for a form; only parameters the user typed are sent. */
export function toRequest(form: FormState, attack: AttackInfo | undefined): AttackRequest {
  const params: Record<string, ParamValue> = {};
  for (const p of attack?.params ?? []) {
    if (p.name === "steps") continue;
    const v = paramValue(p, form.extra[p.name]);
    if (v !== undefined) params[p.name] = v;
  }
  const stepsInfo = attack?.params.find((p) => p.name === "steps");
  const steps = stepsInfo ? paramValue(stepsInfo, form.steps) : undefined;
  const req: AttackRequest = {
    model: form.model,
    interpreter: form.interpreter,
    attack: form.attack,
    eps: form.eps255 / 255,
    targeted: form.targeted,
    seed: form.seed,
    params,
  };
  if (form.source === "upload") req.upload = form.upload;
  else {
    req.index = form.index;
    if (form.dataset) req.dataset = form.dataset;
  }
  if (typeof steps === "number") req.steps = steps;
  if (attack?.black_box && form.surrogate) req.surrogate = form.surrogate;
  const target = parseValue(form.target);
  if (form.targeted && typeof target === "number") req.target = target;
  return req;
}

/** The batch request for a form: the same attack on n seeded, correctly classified images. */
export function toBatchRequest(form: FormState, attack: AttackInfo | undefined, n: number): BatchRequest {
  const single = toRequest(form, attack);
  const req: BatchRequest = {
    model: single.model,
    interpreter: single.interpreter,
    attack: single.attack,
    n,
    eps: single.eps,
    targeted: single.targeted,
    seed: single.seed,
    params: single.params ?? {},
    batch_size: Math.min(32, n),
  };
  if (single.steps !== undefined && single.steps !== null) req.steps = single.steps;
  if (single.surrogate) req.surrogate = single.surrogate;
  return req;
}

/** The note shown under an upload whose size or channels differ from the model's input, else null. */
export function resizeNote(upload: { width: number; height: number }, inputSize: number[]): string | null {
  const [c, h, w] = inputSize;
  if (c === undefined || h === undefined || w === undefined) return null;
  const notes: string[] = [];
  if (upload.width !== w || upload.height !== h) notes.push(`resized from ${upload.width}×${upload.height} to ${w}×${h}`);
  if (c === 1) notes.push("converted to grayscale");
  return notes.length ? `${notes.join(", ")}: the model's input (${c}×${h}×${w})` : null;
}
