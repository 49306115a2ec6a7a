// Accessibility of every view of the lab in headless Chromium: axe-core's WCAG 2 A/AA rules
// (wcag2a, wcag2aa, wcag21a, wcag21aa) find no violation on the attack form (with its advanced
// parameters open), a result with its interpreter comparison, the runs table, a bench run and an
// attack run; and every control of each view is reachable with the Tab key.
import { rmSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { chromiumPath, startLab } from "./util.mjs";

const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
const TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

/** axe's violations of the page as "rule (impact): n nodes [selectors]" lines. */
async function violations(page) {
  if (!(await page.evaluate(() => "axe" in window))) await page.addScriptTag({ path: axePath });
  const res = await page.evaluate((tags) => window.axe.run(document, { runOnly: { type: "tag", values: tags } }), TAGS);
  return res.violations.map((v) => `${v.id} (${v.impact}): ${v.nodes.length} [${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")}]`);
}

/** The visible controls of the page that Tab never reaches (walks the whole tab order once). */
async function unreachable(page) {
  await page.evaluate(() => {
    for (const el of document.querySelectorAll("[data-a11y-id]")) delete el.dataset.a11yId;
    const sel = "a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea, summary, " +
      "[tabindex]:not([tabindex='-1']), tr.clickable, table.sortable th:not(.group)";
    let i = 0;
    for (const el of document.querySelectorAll(sel)) {
      const r = el.getBoundingClientRect();
      const hidden = r.width === 0 || r.height === 0 || el.closest("[hidden]") || getComputedStyle(el).visibility === "hidden";
      if (!hidden) el.dataset.a11yId = String(i++);
    }
    window.__reached = new Set();
    document.addEventListener("focusin", (e) => {
      for (let t = e.target; t; t = t.parentElement?.closest("[data-a11y-id]")) {
        if (t.dataset?.a11yId) window.__reached.add(t.dataset.a11yId);
        if (!t.parentElement) break;
      }
    });
    document.activeElement?.blur();
    document.body.focus();
  });
  const total = await page.$$eval("[data-a11y-id]", (els) => els.length);
  for (let i = 0; i < total * 2 + 20; i++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate((n) => window.__reached.size >= n, total)) break;
  }
  return page.$$eval("[data-a11y-id]", (els) =>
    els.filter((el) => !window.__reached.has(el.dataset.a11yId)).map((el) => el.outerHTML.slice(0, 120)));
}

describe("the lab is accessible (axe-core WCAG 2 A/AA, keyboard)", () => {
  let server, browser, page, base, tmp, serverLog;
  const found = {};

  before(async () => {
    ({ server, base, tmp, log: serverLog } = await startLab("idlsec-a11y-e2e-"));
    browser = await chromium.launch({ executablePath: chromiumPath, args: ["--headless", "--no-sandbox", "--disable-gpu"] });
    // the lab's CSP allows no inline script; axe is injected by the test, so bypass it for the test only
    page = await browser.newPage({ viewport: { width: 1280, height: 900 }, bypassCSP: true });
  });

  after(async () => {
    await browser?.close();
    server?.kill("SIGTERM");
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    console.log(`axe violations per view: ${JSON.stringify(found, null, 1)}`);
    if (process.exitCode) console.error(serverLog.join(""));
  });

  async function check(view) {
    const axe = await violations(page);
    const missed = await unreachable(page);
    found[view] = { axe, unreachable: missed.length };
    assert.deepEqual({ axe, missed }, { axe: [], missed: [] }, `${view}: axe violations, or controls Tab does not reach`);
  }

  test("attack form, advanced parameters open", async () => {
    await page.goto(base);
    await page.waitForSelector("[data-testid=attack] option", { state: "attached" });
    await page.selectOption("[data-testid=attack]", "quscore");
    for (const d of await page.$$("form details")) await d.evaluate((el) => { el.open = true; });
    await check("attack form (quscore, advanced open)");
  });

  test("result and interpreter comparison", async () => {
    await page.selectOption("[data-testid=attack]", "pgd");
    await page.fill("[data-testid=steps]", "2");
    await page.click("[data-testid=run]");
    await page.waitForSelector("[data-testid=result]", { timeout: 90_000 });
    await page.click("[data-testid=compare-button]");
    await page.waitForSelector("[data-testid=comparison]", { timeout: 60_000 });
    await check("attack result + comparison");
  });

  test("runs table", async () => {
    await page.click("[data-testid=tab-runs]");
    await page.waitForSelector("[data-testid=runs-table] tbody tr");
    await check("runs table");
  });

  test("a bench run", async () => {
    await page.click("[data-testid=runs-table] tbody tr:has-text('bench/')");
    await page.waitForSelector("[data-testid=records-table]");
    await check("bench run detail");
  });

  test("an attack run", async () => {
    await page.click("[data-testid=runs-table] tbody tr:has-text('pgd-cam')");
    await page.waitForSelector("[data-testid=examples] figure.example");
    await check("attack run detail");
  });
});
