// Shared by the end-to-end tests: where things are, a free port, polling, a PNG encoder, a runs folder.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { crc32, deflateSync } from "node:zlib";

export const web = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const repo = resolve(web, "..");
export const idlsec = process.env.IDLSEC_BIN ?? join(repo, ".venv", "bin", "idlsec");
export const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
export const env = { ...process.env, OMP_NUM_THREADS: "1", IDLSEC_OFFLINE: "1" };
export const MODEL = "cifar10-resnet20";

export function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

/** Poll `check()` every 200 ms until it is truthy; throw after `ms`. */
export async function waitFor(check, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      if (await check()) return;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what} not within ${ms} ms`);
}

/** Wait until `url` answers 200. */
export const waitForUrl = (url, ms) => waitFor(async () => (await fetch(url)).ok, ms, url);

/** A w×h PNG of one RGB colour (zlib-compressed scanlines, CRC-32 per chunk). */
export function rgbPng(w, h, rgb) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body) >>> 0);
    return Buffer.concat([len, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(w, 0);
  header.writeUInt32BE(h, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  const row = Buffer.concat([Buffer.from([0]), Buffer.from(Array.from({ length: w }, () => rgb).flat())]);
  const pixels = deflateSync(Buffer.concat(Array.from({ length: h }, () => row)));
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([sig, chunk("IHDR", header), chunk("IDAT", pixels), chunk("IEND", Buffer.alloc(0))]);
}

/** A runs folder: a real (tiny) run of `idlsec attack`, and a bench run whose records carry query counts. */
export function makeRuns(dir) {
  const out = spawnSync(idlsec, ["attack", "--model", MODEL, "--dataset", "cifar10", "--interpreter", "cam", "--attack", "pgd",
    "--n", "2", "--steps", "2", "--device", "cpu", "--out", join(dir, "pgd-cam")], { env, encoding: "utf8" });
  assert.equal(out.status, 0, `idlsec attack failed: ${out.stderr}`);
  const bb = join(dir, "bench", "suite");
  mkdirSync(bb, { recursive: true });
  const recs = [120, 480, 60, null].map((q, i) => ({ config: "qs0001", model: MODEL, attack: "quscore", interpreter: "cam", pos: i,
    index: i, label: i, pred: q === null ? i : (i + 1) % 10, success: q !== null, confidence: 0.9, iou_topk_mean: 0.5 + 0.1 * i,
    iou_topk: [0.4, 0.5, 0.6], map_l1: 10 - i, queries: q ?? 1000 }));
  recs.push(...[0, 1].map((i) => ({ config: "pgd0001", model: MODEL, attack: "pgd", interpreter: "cam", pos: i, index: i, label: i,
    target: (i + 1) % 10, pred: (i + 1) % 10, success: true, confidence: 1, iou_topk_mean: 0.3, map_l1: 12 })));
  writeFileSync(join(bb, "results.jsonl"), recs.map((r) => JSON.stringify(r)).join("\n") + "\n");
}

/** `idlsec serve` on a free port over a fresh runs folder (makeRuns): { server, base, tmp, log }. */
export async function startLab(prefix) {
  const tmp = mkdtempSync(join(tmpdir(), prefix));
  makeRuns(join(tmp, "runs"));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const log = [];
  const server = spawn(idlsec, ["serve", "--port", String(port), "--runs", join(tmp, "runs"), "--device", "cpu"], { env });
  server.stdout.on("data", (d) => log.push(String(d)));
  server.stderr.on("data", (d) => log.push(String(d)));
  await waitForUrl(`${base}/api/registry`, 60_000);
  return { server, base, tmp, log };
}
