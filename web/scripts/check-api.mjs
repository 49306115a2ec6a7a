// Check that schema.d.ts is what scripts/gen-api.mjs generates from the committed openapi.json
// (tests/test_lab_api.py checks that openapi.json is the server's schema).
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generate } from "./gen-api.mjs";

const dir = mkdtempSync(join(tmpdir(), "idlsec-api-"));
const out = join(dir, "schema.d.ts");
generate(out);
const fresh = readFileSync(out, "utf8");
rmSync(dir, { recursive: true, force: true });
if (fresh !== readFileSync("src/api/schema.d.ts", "utf8")) {
  console.error("src/api/schema.d.ts is stale: run `npm run gen:api` and commit it");
  process.exit(1);
}
console.log("schema.d.ts matches openapi.json");
