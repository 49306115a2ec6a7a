// Job tracking for the lab: the job list (kept in sync with the server's event stream), the
// output of the jobs this page submitted, fetched when they finish, and whether the stream is up
// (down while the server is; the stream reconnects by itself and the list is fetched again).
import { useCallback, useEffect, useRef, useState } from "react";
import { type AttackResult, type BatchResult, type CompareResult, type JobEvent, type JobStatus, api } from "../api/client";

export type JobApi = Pick<typeof api, "jobs" | "events" | "result" | "comparison" | "batch">;

/** A job's status after an event: state, error and progress from the event. */
export function applyEvent(job: JobStatus, ev: JobEvent): JobStatus {
  return {
    ...job,
    state: ev.state,
    error: ev.error ?? null,
    progress: {
      done: ev.done,
      total: ev.total,
      message: ev.message,
      fraction: ev.state === "done" ? 1 : ev.total ? ev.done / ev.total : 0,
    },
  };
}

const isActive = (j: JobStatus) => j.state === "queued" || j.state === "running";

export interface Jobs {
  jobs: JobStatus[];
  result: AttackResult | null;
  comparison: CompareResult | null;
  batch: BatchResult | null;
  /** Follow a job this page submitted: its output is shown when it is done. */
  track: (job: JobStatus) => void;
  /** Show the output of a finished job. */
  show: (job: Pick<JobStatus, "id" | "kind" | "state">) => void;
  /** False while the event stream is down (the server stopped or is unreachable). */
  connected: boolean;
}

export function useJobs(onError: (message: string) => void, client: JobApi = api): Jobs {
  const [jobs, setJobs] = useState<JobStatus[]>([]);
  const [result, setResult] = useState<AttackResult | null>(null);
  const [comparison, setComparison] = useState<CompareResult | null>(null);
  const [batch, setBatch] = useState<BatchResult | null>(null);
  const [connected, setConnected] = useState(true);

  const fetchOutput = useCallback(
    (job: Pick<JobStatus, "id" | "kind">) => {
      const fail = (e: unknown) => onError(e instanceof Error ? e.message : String(e));
      if (job.kind === "attack") client.result(job.id).then(setResult, fail);
      else if (job.kind === "compare") client.comparison(job.id).then(setComparison, fail);
      else client.batch(job.id).then(setBatch, fail);
    },
    [client, onError],
  );

  // ids in the list; jobs whose output this page shows when they end; final states of ended jobs
  const known = useRef(new Set<string>());
  const wanted = useRef(new Set<string>());
  const ended = useRef(new Map<string, JobStatus["state"]>());
  useEffect(() => {
    known.current = new Set(jobs.map((j) => j.id));
  }, [jobs]);

  const collect = useCallback(
    (id: string, kind: JobStatus["kind"], state: JobStatus["state"]) => {
      ended.current.set(id, state);
      if (!wanted.current.delete(id)) return;
      if (state === "done") fetchOutput({ id, kind });
    },
    [fetchOutput],
  );

  useEffect(() => {
    const sync = () =>
      client.jobs().then((js) => {
        setJobs(js);
        js.filter((j) => !isActive(j)).forEach((j) => collect(j.id, j.kind, j.state));
      }, () => undefined);
    return client.events(
      (name, ev) => {
        setJobs((js) => js.map((j) => (j.id === ev.job ? applyEvent(j, ev) : j)));
        if (!known.current.has(ev.job)) void sync(); // a job submitted elsewhere (another tab, the API)
        if (name === "end") collect(ev.job, ev.kind, ev.state);
      },
      () => {
        setConnected(true);
        void sync();
      },
      () => setConnected(false),
    );
  }, [client, collect]);

  const track = useCallback(
    (job: JobStatus) => {
      known.current.add(job.id);
      setJobs((js) => [job, ...js.filter((j) => j.id !== job.id)]);
      wanted.current.add(job.id);
      const state = ended.current.get(job.id);
      if (state) collect(job.id, job.kind, state); // it ended before the response arrived
    },
    [collect],
  );

  const show = useCallback((job: Pick<JobStatus, "id" | "kind" | "state">) => {
    if (job.state === "done") fetchOutput(job);
  }, [fetchOutput]);

  return { jobs, result, comparison, batch, track, show, connected };
}
