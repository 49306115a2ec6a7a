// Generate src/api/schema.d.ts (or the file given) from src/api/openapi.json with openapi-typescript,
// after stripping what the lab adds to tell the truth about one lab (src/idlsec/lab/openapi.py):
// the name sets (`x-names` enums: a lab started with --model has other names) and the rules across
// fields (`x-rules` allOf), so the TypeScript types stay plain strings and plain objects.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function strip(node) {
  if (Array.isArray(node)) return node.map(strip);
  if (node === null || typeof node !== "object") return node;
  const out = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === "x-names" || key === "x-rules") continue;
    if (key === "enum" && "x-names" in node) continue;
    if (key === "allOf" && "x-rules" in node) continue;
    out[key] = strip(value);
  }
  return out;
}

export function generate(out) {
  const dir = mkdtempSync(join(tmpdir(), "idlsec-api-"));
  try {
    const input = join(dir, "openapi.json");
    writeFileSync(input, JSON.stringify(strip(JSON.parse(readFileSync("src/api/openapi.json", "utf8")))));
    execFileSync("npx", ["openapi-typescript", input, "-o", out], { stdio: "ignore" });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) generate(process.argv[2] ?? "src/api/schema.d.ts");
