// Shared by the end-to-end tests: where things are, a free port, polling, and a PNG encoder.
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
