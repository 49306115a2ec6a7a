import type { ReactElement } from "react";
import { renderToString as render } from "react-dom/server";
import { afterEach, describe, expect, it, vi } from "vitest";
import { type JobEvent, type JobStatus, Api } from "../api/client";
import { ConnectionBanner } from "./ConnectionBanner";
import { JobList } from "./JobList";

const renderToString = (el: ReactElement) => render(el).replaceAll("<!-- -->", "");
const job = (id: string, state: JobStatus["state"]): JobStatus => ({
  id,
  kind: "attack",
  state,
  error: null,
  label: `job ${id}`,
  created: 0,
  progress: { done: 0, total: 0, message: "", fraction: 0 },
});

describe("JobList re-runs", () => {
  const states: JobStatus["state"][] = ["queued", "running", "done", "failed", "cancelled", "interrupted"];
  const html = renderToString(
    <JobList jobs={states.map((s) => job(s, s))} onShow={() => undefined} onCancel={() => undefined} onRerun={() => undefined} />,
  );
  it("offers 'run again' for interrupted, failed and cancelled jobs only", () => {
    const rerunnable = states.filter((s) => html.includes(`data-testid="rerun-${s}"`));
    expect(rerunnable).toEqual(["failed", "cancelled", "interrupted"]);
  });
  it("offers none without a handler", () => {
    const plain = renderToString(<JobList jobs={[job("i", "interrupted")]} onShow={() => undefined} onCancel={() => undefined} />);
    expect(plain).not.toContain("rerun-");
  });
});

describe("ConnectionBanner", () => {
  it("shows only while disconnected", () => {
    expect(renderToString(<ConnectionBanner connected />)).toBe("");
    const html = renderToString(<ConnectionBanner connected={false} />);
    expect(html).toContain('data-testid="disconnected"');
    expect(html).toContain('role="status"');
  });
});

/** A stand-in for the browser's EventSource: the test drives open, error and close. */
class FakeSource {
  static CLOSED = 2;
  static made: FakeSource[] = [];
  readyState = 0;
  onopen: (() => void) | null = null;
  onerror: (() => void) | null = null;
  listeners = new Map<string, (e: { data: string }) => void>();
  constructor(public url: string) {
    FakeSource.made.push(this);
  }
  addEventListener(name: string, fn: (e: { data: string }) => void) {
    this.listeners.set(name, fn);
  }
  close() {
    this.readyState = FakeSource.CLOSED;
  }
}

describe("LabClient.events", () => {
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
    FakeSource.made = [];
  });
  it("reports the stream's loss and opens a new one where the browser gave up", () => {
    vi.useFakeTimers();
    vi.stubGlobal("EventSource", FakeSource);
    const log: string[] = [];
    const stop = new Api("").events(
      (name, ev: JobEvent) => log.push(`${name}:${ev.job}`),
      () => log.push("open"),
      () => log.push("error"),
    );
    const first = FakeSource.made[0]!;
    first.onopen?.();
    first.listeners.get("end")?.({ data: JSON.stringify({ job: "j1" }) });
    first.readyState = 0; // the browser reconnects by itself: no new source
    first.onerror?.();
    vi.advanceTimersByTime(5000);
    expect(FakeSource.made).toHaveLength(1);
    first.readyState = FakeSource.CLOSED; // it gave up: a new stream after 2 s
    first.onerror?.();
    vi.advanceTimersByTime(2000);
    expect(FakeSource.made).toHaveLength(2);
    FakeSource.made[1]!.onopen?.();
    expect(log).toEqual(["open", "end:j1", "error", "error", "open"]);
    stop();
    const second = FakeSource.made[1]!;
    second.readyState = FakeSource.CLOSED;
    second.onerror?.();
    vi.advanceTimersByTime(5000);
    expect(FakeSource.made).toHaveLength(2); // stopped: no more reconnection
  });
});
