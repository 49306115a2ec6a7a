// The attack form's state <-> the API's AttackRequest.
import type { AttackInfo, AttackRequest, BatchRequest, ParamValue } from "../api/client";

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
  extra: Record<string, string>; // other hyperparameters, as typed
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

/** The request for a form; only parameters the user typed are sent. */
export function toRequest(form: FormState, attack: AttackInfo | undefined): AttackRequest {
  const params: Record<string, ParamValue> = {};
  const names = new Set((attack?.params ?? []).map((p) => p.name));
  for (const [k, text] of Object.entries(form.extra)) {
    const v = parseValue(text);
    if (v !== undefined && names.has(k) && k !== "steps") params[k] = v;
  }
  const steps = parseValue(form.steps);
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
  if (typeof steps === "number" && names.has("steps")) req.steps = steps;
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
