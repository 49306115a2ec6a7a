import { describe, expect, it } from "vitest";
import { Api, ApiError, createLabClient, errorMessage } from "./client";
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

interface Seen {
  url?: string;
  method?: string;
  body?: string;
  headers?: Headers;
}

/** A fetch that answers ``status`` with ``body`` and records the request (openapi-fetch sends a Request). */
function fakeFetch(status: number, body: unknown, seen: Seen) {
  return async (req: Request) => {
    seen.url = req.url;
    seen.method = req.method;
    seen.headers = req.headers;
    seen.body = await req.text();
    return new Response(typeof body === "string" ? body : JSON.stringify(body), { status });
  };
}

const job = (state: string, id = "j1") => ({ id, kind: "attack", state, progress: { done: 0, total: 1, fraction: 0, message: "" }, label: "", created: 0 });

describe("createLabClient", () => {
  it("posts JSON to the typed path and returns the parsed body", async () => {
    const seen: Seen = {};
    const lab = createLabClient({ baseUrl: "http://h/", fetch: fakeFetch(202, job("queued"), seen) });
    const status = await lab.submit({ model: "m", interpreter: "cam", attack: "pgd", eps: 0.03, targeted: true, seed: 0, index: 1 });
    expect(status.id).toBe("j1");
    expect(seen.url).toBe("http://h/api/jobs");
    expect(seen.method).toBe("POST");
    expect(JSON.parse(seen.body ?? "")).toMatchObject({ model: "m", eps: 0.03 });
    expect(seen.headers?.get("x-idlsec-token")).toBeNull();
  });
  it("sends the token on every request", async () => {
    const seen: Seen = {};
    const lab = createLabClient({ baseUrl: "http://h", token: "secret-token-1234", fetch: fakeFetch(200, [], seen) });
    await lab.jobs();
    expect(seen.headers?.get("x-idlsec-token")).toBe("secret-token-1234");
  });
  it("fills path and query parameters", async () => {
    const seen: Seen = {};
    const lab = createLabClient({ baseUrl: "http://h", fetch: fakeFetch(200, {}, seen) });
    await lab.datasetImage("cifar10", 3);
    expect(seen.url).toBe("http://h/api/datasets/cifar10/images/3");
    await lab.runExamples("bench/a b", "cfg1");
    expect(seen.url).toBe("http://h/api/runs/examples?id=bench%2Fa%20b&config=cfg1");
    await lab.compare("j1", ["cam", "grad"]);
    expect(seen.url).toBe("http://h/api/jobs/j1/compare");
    expect(JSON.parse(seen.body ?? "")).toEqual({ interpreters: ["cam", "grad"] });
  });
  it("throws ApiError with the server's message on 4xx", async () => {
    const api = new Api("http://h", fakeFetch(415, { detail: "notes.png is not an image" }, {}));
    await expect(api.upload(new Blob(["x"]), "notes.png")).rejects.toEqual(new ApiError(415, "notes.png is not an image"));
  });
  it("uploads multipart form data", async () => {
    const seen: Seen = {};
    const api = new Api("http://h", fakeFetch(200, { id: "u1" }, seen));
    expect((await api.upload(new Blob(["png"]), "cat.png")).id).toBe("u1");
    expect(seen.headers?.get("content-type")).toMatch(/^multipart\/form-data; boundary=/);
    expect(seen.body).toContain('filename="cat.png"');
  });
  it("copes with a non-JSON error body", async () => {
    const api = new Api("http://h", fakeFetch(502, "Bad Gateway", {}));
    await expect(api.registry()).rejects.toEqual(new ApiError(502, "Bad Gateway"));
  });
  it("encodes run ids in file URLs", () => {
    expect(new Api("").runFileUrl("bench/a b", "x.png")).toBe("/api/runs/file?id=bench%2Fa%20b&name=x.png");
  });
});

describe("wait", () => {
  function sequence(states: string[], seen: string[]) {
    let i = 0;
    return async (req: Request) => {
      seen.push(req.url);
      const state = states[Math.min(i++, states.length - 1)] ?? "done";
      return new Response(JSON.stringify(job(state)), { status: 200 });
    };
  }
  it("polls until the job ends and reports every status", async () => {
    const urls: string[] = [];
    const lab = createLabClient({ baseUrl: "http://h", fetch: sequence(["queued", "running", "running", "done"], urls) });
    const states: string[] = [];
    const end = await lab.wait("j1", { intervalMs: 1, onStatus: (s) => states.push(s.state) });
    expect(end.state).toBe("done");
    expect(states).toEqual(["queued", "running", "running", "done"]);
    expect(urls.every((u) => u === "http://h/api/jobs/j1")).toBe(true);
  });
  it("returns failed and interrupted jobs too", async () => {
    for (const state of ["failed", "cancelled", "interrupted"]) {
      const lab = createLabClient({ baseUrl: "http://h", fetch: sequence([state], []) });
      expect((await lab.wait("j1", { intervalMs: 1 })).state).toBe(state);
    }
  });
  it("gives up after timeoutMs", async () => {
    const lab = createLabClient({ baseUrl: "http://h", fetch: sequence(["running"], []) });
    await expect(lab.wait("j1", { intervalMs: 5, timeoutMs: 20 })).rejects.toMatchObject({ status: 408 });
  });
  it("answers a 404 for an unknown job", async () => {
    const lab = createLabClient({ baseUrl: "http://h", fetch: fakeFetch(404, { detail: "unknown job 'x'" }, {}) });
    await expect(lab.wait("x")).rejects.toEqual(new ApiError(404, "unknown job 'x'"));
  });
  it("attack() submits, waits and fetches the result", async () => {
    const answers = [job("queued"), job("running"), job("done"), { job: "j1", success: true }];
    const urls: string[] = [];
    const lab = createLabClient({
      baseUrl: "http://h",
      fetch: async (req: Request) => {
        urls.push(`${req.method} ${req.url}`);
        return new Response(JSON.stringify(answers.shift()), { status: urls.length === 1 ? 202 : 200 });
      },
    });
    const res = await lab.attack({ model: "m", interpreter: "cam", attack: "pgd", eps: 0.03, targeted: true, seed: 0, index: 0 }, { intervalMs: 1 });
    expect(res.success).toBe(true);
    expect(urls).toEqual(["POST http://h/api/jobs", "GET http://h/api/jobs/j1", "GET http://h/api/jobs/j1", "GET http://h/api/jobs/j1/result"]);
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
