// Script the lab from Node: submit an attack, wait for it, print its summary.
//
//   idlsec serve                          # in another terminal (add --token T to require a token)
//   cd web && npm ci && npm run build:client
//   node examples/script.mjs [http://127.0.0.1:8765] [TOKEN]
//
// The client is typed from the lab's OpenAPI schema (src/api/client.ts, openapi-fetch); every
// call answers the schema's types or throws ApiError with the server's message.
import { pathToFileURL } from "node:url";
import { createLabClient } from "../dist-client/client.js";

export async function main({ baseUrl = "http://127.0.0.1:8765", token, fetch, log = console.log } = {}) {
  const lab = createLabClient({ baseUrl, token, fetch });
  const registry = await lab.registry();
  const model = registry.models.find((m) => m.datasets.length > 0) ?? registry.models[0];
  log(`lab ${registry.version} on ${registry.device}: attacking ${model.name}`);
  const job = await lab.submit({
    model: model.name, index: 0, interpreter: "cam", attack: "pgd",
    eps: 8 / 255, steps: 10, targeted: true, seed: 0,
  });
  const status = await lab.wait(job.id, {
    intervalMs: 250,
    onStatus: (s) => log(`  ${s.state} ${Math.round(s.progress.fraction * 100)}% ${s.progress.message}`),
  });
  if (status.state !== "done") throw new Error(`job ${job.id} ${status.state}: ${status.error ?? ""}`);
  const r = await lab.result(job.id);
  const summary = {
    success: r.success,
    benign: `${r.benign.name} (${r.benign.confidence.toFixed(2)})`,
    adversarial: `${r.adversarial.name} (${r.adversarial.confidence.toFixed(2)})`,
    iou_topk_mean: r.metrics.iou_topk_mean ?? null,
    seconds: Number(r.seconds.toFixed(2)),
  };
  log(JSON.stringify(summary, null, 2));
  return summary;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main({ baseUrl: process.argv[2], token: process.argv[3] }).catch((e) => {
    console.error(`error: ${e.message}`);
    process.exit(2);
  });
}
