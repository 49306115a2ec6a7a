// examples/script.mjs builds and runs: the client is compiled for Node (npm run build:client) and
// the example scripts a fake lab through it (submit, wait, result).
import { execFileSync } from "node:child_process";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";

const web = resolve(__dirname, "../..");

describe("examples/script.mjs", () => {
  beforeAll(() => {
    execFileSync("npm", ["run", "--silent", "build:client"], { cwd: web, stdio: "pipe" });
  }, 60_000);

  it("submits an attack, waits for it and prints its summary", async () => {
    const { main } = await import(pathToFileURL(resolve(web, "examples/script.mjs")).href);
    const status = (state: string) => ({ id: "j1", kind: "attack", state, label: "", created: 0,
      progress: { done: state === "done" ? 1 : 0, total: 1, fraction: state === "done" ? 1 : 0, message: "" } });
    const answers: Record<string, unknown[]> = {
      "GET /api/registry": [{ version: "0.1.0", device: "cpu", models: [{ name: "cifar10-resnet20", datasets: ["cifar10"] }] }],
      "POST /api/jobs": [status("queued")],
      "GET /api/jobs/j1": [status("running"), status("done")],
      "GET /api/jobs/j1/result": [{ success: true, benign: { name: "cat", confidence: 0.9 }, adversarial: { name: "dog", confidence: 0.8 },
        metrics: { iou_topk_mean: 0.5 }, seconds: 1.234 }],
    };
    const sent: string[] = [];
    const fetch = async (req: Request) => {
      const key = `${req.method} ${new URL(req.url).pathname}`;
      sent.push(key);
      if (key === "POST /api/jobs") expect(await req.json()).toMatchObject({ model: "cifar10-resnet20", attack: "pgd", index: 0 });
      return new Response(JSON.stringify(answers[key]?.shift()), { status: key.startsWith("POST") ? 202 : 200 });
    };
    const lines: string[] = [];
    const summary = await main({ baseUrl: "http://lab", fetch, log: (l: string) => lines.push(l) });
    expect(summary).toEqual({ success: true, benign: "cat (0.90)", adversarial: "dog (0.80)", iou_topk_mean: 0.5, seconds: 1.23 });
    expect(sent).toEqual(["GET /api/registry", "POST /api/jobs", "GET /api/jobs/j1", "GET /api/jobs/j1", "GET /api/jobs/j1/result"]);
    expect(lines.at(-1)).toContain('"success": true');
  });
});
