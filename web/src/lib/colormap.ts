// Turning interpreter maps into pixels: the jet colormap and RGBA buffers for <canvas>.
import type { MapData } from "../api/client";

export type RGB = [number, number, number];

/** Jet colormap (blue -> cyan -> yellow -> red) for v in [0, 1]; values outside are clamped. */
export function jet(v: number): RGB {
  const x = Number.isFinite(v) ? Math.min(1, Math.max(0, v)) : 0;
  const channel = (offset: number) => {
    const t = 1.5 - Math.abs(4 * x - offset);
    return Math.round(255 * Math.min(1, Math.max(0, t)));
  };
  return [channel(3), channel(2), channel(1)];
}

/** RGBA pixels of a map (row-major, width*height*4) with a constant alpha in [0, 1]. */
export function mapToRGBA(map: MapData, alpha = 1): Uint8ClampedArray<ArrayBuffer> {
  const n = map.width * map.height;
  if (map.values.length !== n) {
    throw new Error(`map has ${map.values.length} values, expected ${map.width}x${map.height}`);
  }
  const out = new Uint8ClampedArray(n * 4);
  const a = Math.round(255 * Math.min(1, Math.max(0, alpha)));
  map.values.forEach((v, i) => {
    const [r, g, b] = jet(v);
    out.set([r, g, b, a], i * 4);
  });
  return out;
}

/** The CSS gradient of the colorbar legend. */
export function jetGradient(stops = 8): string {
  const parts: string[] = [];
  for (let i = 0; i <= stops; i++) {
    const [r, g, b] = jet(i / stops);
    parts.push(`rgb(${r},${g},${b}) ${Math.round((100 * i) / stops)}%`);
  }
  return `linear-gradient(to right, ${parts.join(", ")})`;
}
