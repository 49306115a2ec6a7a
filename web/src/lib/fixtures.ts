// Test fixtures shared by the unit tests (not used by the app).
import type { ParamInfo } from "../api/client";

/** A parameter as the registry describes it (idlsec.attacks.params). */
export const param = (name: string, kind: ParamInfo["kind"], dflt: ParamInfo["default"], more: Partial<ParamInfo> = {}): ParamInfo => ({
  name, kind, default: dflt, help: `what ${name} does`, advanced: false, nullable: false, min_exclusive: false, max_exclusive: false,
  min: null, max: null, unit: null, choices: null, none_means: null, ...more,
});
