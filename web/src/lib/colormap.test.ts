import { describe, expect, it } from "vitest";
import { jet, jetGradient, mapToRGBA } from "./colormap";

describe("jet", () => {
  it("runs from dark blue through green to dark red", () => {
    expect(jet(0)).toEqual([0, 0, 128]);
    expect(jet(0.5)).toEqual([128, 255, 128]);
    expect(jet(1)).toEqual([128, 0, 0]);
  });
  it("clamps out-of-range and non-finite values", () => {
    expect(jet(-3)).toEqual(jet(0));
    expect(jet(7)).toEqual(jet(1));
    expect(jet(Number.NaN)).toEqual(jet(0));
  });
});

describe("mapToRGBA", () => {
  it("colours each cell and sets alpha", () => {
    const px = mapToRGBA({ width: 2, height: 1, values: [0, 1] }, 0.5);
    expect(Array.from(px)).toEqual([0, 0, 128, 128, 128, 0, 0, 128]);
  });
  it("rejects a map whose values do not fill width x height", () => {
    expect(() => mapToRGBA({ width: 2, height: 2, values: [0, 1] })).toThrow(/expected 2x2/);
  });
});

it("builds a CSS gradient with one stop per step", () => {
  const g = jetGradient(4);
  expect(g.startsWith("linear-gradient(to right, rgb(0,0,128) 0%")).toBe(true);
  expect(g.match(/rgb\(/g)).toHaveLength(5);
});
