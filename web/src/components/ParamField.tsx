import type { ParamInfo } from "../api/client";
import { defaultText, isPixel, paramError, paramValue } from "../lib/params";

/** Short numbers for the 1/255 conversion: 0.0078. */
const fmt = (v: number) => String(Number(v.toPrecision(3)));

/**
 * One attack hyperparameter, typed from the registry: a checkbox (booleans), a select (choices,
 * and booleans whose default is "the preset's"), or a number input (pixel budgets in 1/255 with
 * the conversion shown); a one-line help, and the error under the control it belongs to.
 * ``text`` is what the user set; empty = the attack's default (nothing is sent).
 */
export function ParamField(props: { p: ParamInfo; text: string; onChange: (text: string) => void; serverError?: string | null; testId?: string }) {
  const { p, text, onChange } = props;
  const id = `param-${p.name}`;
  const error = paramError(p, text) ?? props.serverError ?? null;
  const described = [`${id}-help`, error ? `${id}-error` : null].filter(Boolean).join(" ");
  const testId = props.testId ?? id;
  let control;
  if (p.kind === "bool" && !p.nullable) {
    const checked = text === "" ? p.default === true : text === "true";
    return (
      <div className="param">
        <label className="inline">
          <input
            type="checkbox"
            checked={checked}
            onChange={(e) => onChange(e.target.checked === (p.default === true) ? "" : String(e.target.checked))}
            aria-describedby={described}
            data-testid={testId}
          />{" "}
          {p.name}
        </label>
        <span className="help" id={`${id}-help`}>
          {p.help}
        </span>
      </div>
    );
  }
  if (p.kind === "bool" || p.kind === "choice") {
    const options = p.kind === "bool" ? ["true", "false"] : (p.choices ?? []);
    const label = (o: string) => (p.kind === "bool" ? (o === "true" ? "yes" : "no") : o);
    control = (
      <select id={id} value={text} onChange={(e) => onChange(e.target.value)} aria-describedby={described} data-testid={testId}>
        <option value="">{p.nullable ? `default (${p.none_means ?? "none"})` : `default (${label(String(p.default))})`}</option>
        {options.map((o) => (
          <option key={o} value={o}>
            {label(o)}
          </option>
        ))}
      </select>
    );
  } else {
    const pixel = isPixel(p);
    const scale = pixel ? 255 : 1;
    const bound = (v: number | null | undefined) => (v === null || v === undefined ? undefined : v * scale);
    const value = paramValue(p, text);
    const shown = typeof value === "number" ? value : typeof p.default === "number" ? p.default : null;
    control = (
      <>
        <input
          id={id}
          type={p.kind === "string" ? "text" : "number"}
          step={p.kind === "int" ? 1 : "any"}
          min={bound(p.min)}
          max={bound(p.max)}
          placeholder={defaultText(p)}
          value={text}
          onChange={(e) => onChange(e.target.value)}
          aria-describedby={described}
          aria-invalid={error ? true : undefined}
          data-testid={testId}
        />
        {pixel && shown !== null && (
          <span className="muted small conversion">
            {text === "" ? "default " : ""}
            {fmt(shown * 255)}/255 = {fmt(shown)}
          </span>
        )}
      </>
    );
  }
  return (
    <div className="param">
      <label htmlFor={id}>
        {p.name}
        {isPixel(p) ? " (in 1/255)" : ""}
      </label>
      {control}
      <span className="help" id={`${id}-help`}>
        {p.help}
      </span>
      {error && (
        <span className="error field-error" id={`${id}-error`} role="alert" data-testid={`${id}-error`}>
          {error}
        </span>
      )}
    </div>
  );
}
