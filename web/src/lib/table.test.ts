import { describe, expect, it } from "vitest";
import { columnsOf, compareCells, configKey, formatCell, groupByConfig, queryCurve, sortRows } from "./table";

describe("sortRows", () => {
  const rows = [
    { id: "run10", asr: 0.5, ok: true },
    { id: "run2", asr: null, ok: false },
    { id: "run1", asr: 0.9, ok: true },
    { id: "run3", asr: 0.5, ok: false },
  ];
  it("sorts numbers numerically, keeps ties stable and empty cells last", () => {
    expect(sortRows(rows, "asr").map((r) => r.id)).toEqual(["run10", "run3", "run1", "run2"]);
    expect(sortRows(rows, "asr", "desc").map((r) => r.id)).toEqual(["run1", "run10", "run3", "run2"]);
  });
  it("sorts strings naturally (run2 before run10)", () => {
    expect(sortRows(rows, "id").map((r) => r.id)).toEqual(["run1", "run2", "run3", "run10"]);
  });
  it("sorts booleans as numbers and does not mutate its input", () => {
    const before = rows.map((r) => r.id);
    expect(sortRows(rows, "ok").map((r) => r.ok)).toEqual([false, false, true, true]);
    expect(rows.map((r) => r.id)).toEqual(before);
  });
  it("compares NaN as empty", () => {
    expect(compareCells(Number.NaN, 1)).toBeGreaterThan(0);
    expect(compareCells(2, 10)).toBeLessThan(0);
  });
});

describe("columnsOf", () => {
  it("lists scalar columns, preferred first, skipping lists", () => {
    const cols = columnsOf([{ b: 1, iou_topk: [0.1, 0.2], a: "x" }, { c: null }], ["a", "missing"]);
    expect(cols).toEqual(["a", "b", "c"]);
  });
});

describe("formatCell", () => {
  it("formats numbers, booleans and empty cells", () => {
    expect(formatCell(3)).toBe("3");
    expect(formatCell(0.123456)).toBe("0.1235");
    expect(formatCell(0.00001234)).toBe("1.23e-5");
    expect(formatCell(true)).toBe("yes");
    expect(formatCell(null)).toBe("–");
    expect(formatCell(Number.POSITIVE_INFINITY)).toBe("–");
    expect(formatCell([1, 2, 3])).toBe("[3]");
    expect(formatCell("cam")).toBe("cam");
  });
});

describe("queryCurve", () => {
  it("is null without query counts (white-box runs)", () => {
    expect(queryCurve([{ success: true, iou: 0.3 }])).toBeNull();
    expect(queryCurve([])).toBeNull();
  });
  it("gives the success rate within each query budget over all images", () => {
    const rows = [
      { success: true, queries: 100 },
      { success: true, queries: 40 },
      { success: false, queries: 1000 },
      { success: true, queries: 100 },
    ];
    expect(queryCurve(rows)).toEqual([
      { x: 0, y: 0 },
      { x: 40, y: 0.25 },
      { x: 100, y: 0.75 },
      { x: 1000, y: 0.75 },
    ]);
  });
});

describe("groupByConfig", () => {
  it("aggregates a bench results file per configuration", () => {
    const rows = [
      { config: "a1", model: "m", attack: "pgd", eps: 0.03, pos: 0, success: true, map_l1: 2, seconds: 1, iou_topk_mean: 0.5 },
      { config: "b2", model: "m", attack: "adv2", eps: 0.03, pos: 0, success: false, map_l1: 1, seconds: 2 },
      { config: "a1", model: "m", attack: "pgd", eps: 0.03, pos: 1, success: false, map_l1: 4, seconds: 1, iou_topk_mean: 0.3 },
    ];
    expect(groupByConfig(rows)).toEqual([
      { config: "a1", model: "m", attack: "pgd", eps: 0.03, n: 2, asr: 0.5, map_l1_mean: 3, iou_topk_mean: 0.4, seconds: 2 },
      { config: "b2", model: "m", attack: "adv2", eps: 0.03, n: 1, asr: 0, map_l1_mean: 1, seconds: 2 },
    ]);
  });
  it("falls back to the configuration fields without a config key", () => {
    const rows = [{ attack: "pgd", success: true }, { attack: "pgd", success: true }, { attack: "cw", success: true }];
    expect(groupByConfig(rows).map((r) => [r.attack, r.n])).toEqual([
      ["pgd", 2],
      ["cw", 1],
    ]);
    expect(configKey(rows[0] ?? {})).toBe(configKey({ attack: "pgd" }));
  });
});
