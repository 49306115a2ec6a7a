import { describe, expect, it } from "vitest";
import { Api, ApiError, errorMessage } from "./client";
import openapi from "./openapi.json";

describe("errorMessage", () => {
  it("reads idlsec's {detail: string}", () => {
    expect(errorMessage(400, { detail: "unknown attack 'x'; valid: pgd" })).toBe("unknown attack 'x'; valid: pgd");
  });
  it("joins FastAPI validation errors with their field", () => {
    const body = { detail: [{ loc: ["body", "eps"], msg: "Input should be less than or equal to 0.5" }, { msg: "bad" }] };
    expect(errorMessage(422, body)).toBe("eps: Input should be less than or equal to 0.5; bad");
  });
  it("falls back to the status", () => {
    expect(errorMessage(502, "gateway")).toBe("request failed with HTTP 502");
  });
});

function fakeFetch(status: number, body: unknown, seen: { url?: string; init?: RequestInit }) {
  return async (url: string, init?: RequestInit) => {
    seen.url = url;
    seen.init = init;
    return new Response(typeof body === "string" ? body : JSON.stringify(body), { status });
  };
}

describe("Api", () => {
  it("posts JSON and returns the parsed body", async () => {
    const seen: { url?: string; init?: RequestInit } = {};
    const api = new Api("http://h", fakeFetch(202, { id: "j1", state: "queued" }, seen));
    const job = await api.submit({ model: "m", interpreter: "cam", attack: "pgd", eps: 0.03, targeted: true, seed: 0 });
    expect(job.id).toBe("j1");
    expect(seen.url).toBe("http://h/api/jobs");
    expect(seen.init?.method).toBe("POST");
    expect(JSON.parse(String(seen.init?.body))).toMatchObject({ model: "m", eps: 0.03 });
  });
  it("throws ApiError with the server's message on 4xx", async () => {
    const api = new Api("", fakeFetch(415, { detail: "notes.png is not an image" }, {}));
    await expect(api.upload(new Blob(["x"]), "notes.png")).rejects.toEqual(new ApiError(415, "notes.png is not an image"));
  });
  it("copes with a non-JSON error body", async () => {
    const api = new Api("", fakeFetch(502, "Bad Gateway", {}));
    await expect(api.registry()).rejects.toEqual(new ApiError(502, "Bad Gateway"));
  });
  it("encodes run ids in query strings", () => {
    expect(new Api("").runFileUrl("bench/a b", "x.png")).toBe("/api/runs/file?id=bench%2Fa%20b&name=x.png");
  });
});

describe("the committed OpenAPI schema", () => {
  it("has every path the client calls", () => {
    const paths = Object.keys(openapi.paths);
    for (const p of ["/api/registry", "/api/jobs", "/api/jobs/{job_id}/events", "/api/uploads", "/api/runs/detail", "/api/runs/file"]) {
      expect(paths).toContain(p);
    }
  });
});
