// End-to-end: the lab survives kill -9. A page follows a finished job and a running one; the
// server is killed (SIGKILL); the page shows its "disconnected" banner; a new server over the same
// --runs folder comes up on the same port; the page reconnects by itself: the banner goes, the
// finished job's result opens, the running one is "interrupted" and "run again" queues it anew.
// A random-weights model on uploaded images: no data mirror needed.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { MODEL, chromiumPath, env, freePort, idlsec, rgbPng, waitFor } from "./util.mjs";

describe("the lab across a kill -9", () => {
  let server, browser, page, base, tmp, port;
  const log = [];

  const start = async () => {
    server = spawn(idlsec, ["serve", "--port", String(port), "--runs", join(tmp, "runs"), "--device", "cpu",
      "--model", MODEL, "--weights", "random"], { env });
    server.stdout.on("data", (d) => log.push(String(d)));
    server.stderr.on("data", (d) => log.push(String(d)));
    await waitFor(async () => (await fetch(`${base}/api/jobs`)).ok, 120_000, "the server");
  };
  const api = async (path, init) => {
    const r = await fetch(`${base}${path}`, init);
    assert.ok(r.ok, `${path}: ${r.status} ${await r.clone().text()}`);
    return r.json();
  };
  const state = async (id) => (await api(`/api/jobs/${id}`)).state;
  const attack = (upload, steps) => ({ method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: MODEL, upload, interpreter: "cam", attack: "pgd", steps, targeted: false }) });

  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), "idlsec-lab-restart-"));
    port = await freePort();
    base = `http://127.0.0.1:${port}`;
    await start();
    browser = await chromium.launch({ executablePath: chromiumPath, args: ["--headless", "--no-sandbox", "--disable-gpu"] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("console", (m) => {
      if (/Content Security Policy/i.test(m.text())) log.push(`CSP: ${m.text()}`);
    });
  });

  after(async () => {
    await browser?.close();
    server?.kill("SIGKILL");
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    if (process.exitCode) console.error(log.join(""));
  });

  test("finished jobs and results survive, the running one is interrupted, the banner comes and goes", async () => {
    await page.goto(base);
    const form = new FormData();
    form.append("file", new Blob([rgbPng(32, 32, [120, 120, 120])], { type: "image/png" }), "grey.png");
    const up = await api("/api/uploads", { method: "POST", body: form });
    const done = (await api("/api/jobs", attack(up.id, 2))).id;
    await waitFor(async () => (await state(done)) === "done", 120_000, "the short job");
    const running = (await api("/api/jobs", attack(up.id, 10_000))).id;
    await waitFor(async () => (await state(running)) === "running", 60_000, "the long job");
    await page.waitForSelector(`[data-testid=job-state-${running}] >> text=running`, { timeout: 20_000 });
    await page.waitForSelector(`[data-testid=job-state-${done}] >> text=done`);
    assert.equal(await page.$("[data-testid=disconnected]"), null);

    server.kill("SIGKILL");
    await page.waitForSelector("[data-testid=disconnected]", { timeout: 20_000 });

    await start();
    await page.waitForSelector("[data-testid=disconnected]", { state: "detached", timeout: 30_000 });
    await page.waitForSelector(`[data-testid=job-state-${running}] >> text=interrupted`, { timeout: 20_000 });
    assert.equal(await page.textContent(`[data-testid=job-state-${done}]`), "done");
    await page.click(`[data-job="${done}"] button.link`);
    await page.waitForSelector("[data-testid=result]", { timeout: 20_000 });
    await page.click(`[data-testid=rerun-${running}]`);
    await waitFor(async () => (await api("/api/jobs")).length === 3, 20_000, "the re-run job");
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=jobs] li").length === 3);
    assert.deepEqual(log.filter((l) => l.startsWith("CSP")), []);
  });
});
