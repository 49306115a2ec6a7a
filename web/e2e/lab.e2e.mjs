// End-to-end test of the lab in headless Chromium: start `idlsec serve` on a free port with a
// finished run to browse, run an attack from the UI, check the result images and metrics, upload a
// bad file, browse the runs, and take screenshots (web/test-results/; docs/img/lab.png when
// UPDATE_SCREENSHOT=1).
import { spawn } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { MODEL, chromiumPath, env, freePort, idlsec, repo, rgbPng, startLab, waitForUrl, web } from "./util.mjs";

const results = join(web, "test-results");

describe("idlsec lab in headless Chromium", () => {
  let server, browser, page, base, tmp, serverLog;

  before(async () => {
    mkdirSync(results, { recursive: true });
    ({ server, base, tmp, log: serverLog } = await startLab("idlsec-lab-e2e-"));
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("pageerror", (e) => serverLog.push(`page error: ${e.message}`));
  });

  after(async () => {
    await browser?.close();
    server?.kill("SIGTERM");
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    if (process.exitCode) console.error(serverLog.join(""));
  });

  test("runs an attack from the UI and shows images, maps and metrics", async () => {
    await page.goto(base);
    await page.selectOption("[data-testid=model]", MODEL);
    await page.selectOption("[data-testid=interpreter]", "cam");
    await page.selectOption("[data-testid=attack]", "pgd");
    await page.fill("[data-testid=index]", "7");
    await page.fill("[data-testid=steps]", "5");
    await page.click("[data-testid=run]");
    await page.waitForSelector("[data-testid=result]", { timeout: 90_000 });
    for (const id of ["benign-image", "adversarial-image", "perturbation-image"]) {
      const width = await page.$eval(`[data-testid=${id}]`, (img) => img.naturalWidth);
      assert.equal(width, 32, `${id} has natural width ${width}`);
    }
    assert.ok(await page.isVisible("[data-testid=benign-map]"));
    assert.ok(await page.isVisible("[data-testid=adversarial-map]"));
    const iou = Number(await page.textContent("[data-testid=metric-iou_topk_mean]"));
    assert.ok(iou >= 0 && iou <= 1, `IoU ${iou}`);
    assert.ok(Number.isFinite(Number(await page.textContent("[data-testid=metric-map_l1]"))));
    assert.match(await page.textContent("[data-testid=adversarial-pred]"), /adversarial: \w+ \d+\.\d%/);
    assert.match(await page.textContent("[data-testid=jobs]"), /done/);
  });

  test("compares interpreters on the adversarial image", async () => {
    await page.click("[data-testid=compare-button]");
    await page.waitForSelector("[data-testid=comparison]", { timeout: 60_000 });
    assert.match(await page.textContent("[data-testid=comparison]"), /cam/);
    await page.screenshot({ path: join(results, "lab.png"), fullPage: true });
    if (process.env.UPDATE_SCREENSHOT === "1") {
      mkdirSync(join(repo, "docs", "img"), { recursive: true });
      copyFileSync(join(results, "lab.png"), join(repo, "docs", "img", "lab.png"));
    }
  });

  test("shows the error message for an upload that is not an image", async () => {
    await page.click("[data-testid=source-upload]");
    await page.setInputFiles("[data-testid=upload]", { name: "notes.png", mimeType: "image/png", buffer: Buffer.from("not a picture") });
    const alert = await page.waitForSelector("[data-testid=upload-error]", { timeout: 10_000 });
    assert.match(await alert.textContent(), /not an image/);
  });

  test("attacks an uploaded image", async () => {
    const dataUrl = await page.getAttribute("[data-testid=benign-image]", "src");
    const png = Buffer.from(dataUrl.split(",")[1], "base64");
    await page.setInputFiles("[data-testid=upload]", { name: "plane.png", mimeType: "image/png", buffer: png });
    await page.waitForSelector("img[alt=uploaded]");
    assert.equal(await page.$("[data-testid=upload-error]"), null);
    assert.equal(await page.$("[data-testid=resize-note]"), null); // 32×32 RGB: the model's input
    await page.click("[data-testid=run]");
    await page.waitForSelector("[data-testid=result] >> text=uploaded image", { timeout: 90_000 });
    assert.equal(await page.$eval("[data-testid=adversarial-image]", (img) => img.naturalWidth), 32);
  });

  test("queues several jobs and cancels a running one", async () => {
    await page.click("text=cifar10 test image");
    await page.fill("[data-testid=steps]", "10000");
    await page.click("[data-testid=run]");
    await page.fill("[data-testid=steps]", "2");
    for (let i = 0; i < 7; i++) await page.click("[data-testid=run]"); // more than a browser's 6 connections per host
    // the long job runs while the short ones wait behind it, and the page stays usable
    const running = await page.waitForSelector("li.job.running", { timeout: 30_000 });
    await page.waitForFunction(() => document.querySelectorAll("li.job.queued").length === 7, null, { timeout: 10_000 });
    await page.click("[data-testid=tab-runs]");
    await page.waitForSelector("[data-testid=runs-table]");
    await page.click("[data-testid=tab-lab]");
    await page.waitForSelector("li.job.running");
    const id = await running.getAttribute("data-job");
    await page.click(`[data-testid=cancel-${id}]`);
    await page.waitForSelector(`li.job.cancelled[data-job="${id}"]`, { timeout: 30_000 });
    await page.waitForFunction(() => document.querySelectorAll("li.job.queued, li.job.running").length === 0, null, { timeout: 60_000 });
    assert.equal(await page.$$eval("li.job.done", (li) => li.length), 3 + 7);
  });

  test("browses runs: sortable table, query-count curve, gallery", async () => {
    await page.click("[data-testid=tab-runs]");
    await page.waitForSelector("[data-testid=runs-table] tbody tr");
    const ids = await page.$$eval("[data-testid=runs-table] tbody tr td:first-child", (tds) => tds.map((t) => t.textContent));
    assert.deepEqual([...ids].sort(), ["bench/suite", "pgd-cam"]);
    await page.click("[data-testid=runs-table] th[title=id] button");
    const desc = await page.$$eval("[data-testid=runs-table] tbody tr td:first-child", (tds) => tds.map((t) => t.textContent));
    assert.deepEqual(desc, ["pgd-cam", "bench/suite"]);
    await page.click("[data-testid=runs-table] tbody tr:has-text('bench/')");
    await page.waitForSelector("[data-testid=query-curve]");
    assert.equal(await page.$$eval("[data-testid=configs-table] tbody tr", (rows) => rows.length), 2);
    await page.click("[data-testid=configs-table] tbody tr:has-text('pgd')");
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=records-table] tbody tr").length === 2);
    assert.equal(await page.$("[data-testid=query-curve]"), null);
    await page.click("[data-testid=configs-table] tbody tr:has-text('quscore')");
    await page.waitForSelector("[data-testid=query-curve]");
    assert.equal(await page.$$eval("[data-testid=records-table] tbody tr", (rows) => rows.length), 4);
    await page.click("[data-testid=runs-table] tbody tr:has-text('pgd-cam')");
    await page.waitForSelector("[data-testid=gallery] img");
    await page.waitForFunction(() => {
      const img = document.querySelector("[data-testid=gallery] img");
      return img instanceof HTMLImageElement && img.complete && img.naturalWidth > 0;
    });
    assert.equal(await page.$$eval("[data-testid=records-table] tbody tr", (rows) => rows.length), 2);
    await page.waitForSelector("[data-testid=examples] figure.example");
    assert.equal(await page.$$eval("[data-testid=examples] figure.example", (f) => f.length), 2);
    await page.screenshot({ path: join(results, "runs.png"), fullPage: true });
    if (process.env.UPDATE_SCREENSHOT === "1") copyFileSync(join(results, "runs.png"), join(repo, "docs", "img", "lab-runs.png"));
  });

  test("runs a batch on seeded images and opens the saved run", async () => {
    await page.click("[data-testid=tab-lab]");
    await page.fill("[data-testid=steps]", "2");
    await page.fill("[data-testid=batch-n]", "2");
    await page.click("[data-testid=run-batch]");
    await page.waitForSelector("[data-testid=batch-result]", { timeout: 90_000 });
    assert.match(await page.textContent("[data-testid=batch-result]"), /saved as run lab\//);
    await page.click("[data-testid=open-run]");
    await page.waitForSelector("[data-testid=run-detail] >> text=/^lab\//");
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=records-table] tbody tr").length === 2);
    await page.waitForSelector("[data-testid=examples] figure.example");
  });
});

describe("the lab with models given on the command line", () => {
  let server, browser, page, base, tmp;
  const serverLog = [];

  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), "idlsec-lab-e2e-byom-"));
    // an image folder of 40×30 RGB pictures, for a model on 1×28×28 (sub-folders named after
    // two of its classes: folder names map through the model's class names)
    for (const [i, cls] of ["sandal", "sneaker"].entries()) {
      mkdirSync(join(tmp, "shots", cls), { recursive: true });
      writeFileSync(join(tmp, "shots", cls, "0.png"), rgbPng(40, 30, [200, 40 + 100 * i, 30]));
    }
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    server = spawn(idlsec, ["serve", "--port", String(port), "--device", "cpu", "--model", "fmnist-cnn", "--weights", "random",
      "--name", "fm", "--dataset", `folder:${join(tmp, "shots")}`], { env });
    server.stdout.on("data", (d) => serverLog.push(String(d)));
    server.stderr.on("data", (d) => serverLog.push(String(d)));
    await waitForUrl(`${base}/api/registry`, 60_000);
    browser = await chromium.launch({ executablePath: chromiumPath, args: ["--headless", "--no-sandbox", "--disable-gpu"] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  });

  after(async () => {
    await browser?.close();
    server?.kill("SIGTERM");
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    if (process.exitCode) console.error(serverLog.join(""));
  });

  test("offers only the given model, its folder, and notes how an upload is resized", async () => {
    await page.goto(base);
    await page.waitForSelector("[data-testid=model] option", { state: "attached" });
    const options = await page.$$eval("[data-testid=model] option", (os) => os.map((o) => o.value));
    assert.deepEqual(options, ["fm"]);
    await page.selectOption("[data-testid=dataset]", "folder:shots");
    await page.waitForSelector("img[alt=selected]");
    await page.fill("[data-testid=steps]", "2");
    await page.fill("[data-testid=index]", "1");
    await page.click("[data-testid=run]");
    await page.waitForSelector("[data-testid=result]", { timeout: 90_000 });
    assert.equal(await page.$eval("[data-testid=adversarial-image]", (img) => img.naturalWidth), 28);
    await page.click("[data-testid=source-upload]");
    await page.setInputFiles("[data-testid=upload]", { name: "big.png", mimeType: "image/png",
      buffer: readFileSync(join(tmp, "shots", "sandal", "0.png")) });
    const note = await page.waitForSelector("[data-testid=resize-note]", { timeout: 10_000 });
    assert.match(await note.textContent(), /resized from 40×30 to 28×28, converted to grayscale/);
  });
});
