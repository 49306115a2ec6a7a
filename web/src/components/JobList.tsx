import type { JobStatus } from "../api/client";
import { ProgressBar } from "./common";

const RERUNNABLE: JobStatus["state"][] = ["interrupted", "failed", "cancelled"];

/** The lab's jobs, newest first: state, progress and a cancel button while active, a "run again"
 * button once interrupted (by a server that stopped), failed or cancelled. */
export function JobList(props: {
  jobs: JobStatus[];
  onShow: (job: JobStatus) => void;
  onCancel: (id: string) => void;
  onRerun?: (id: string) => void;
  error?: string | null;
}) {
  const { jobs, onShow, onCancel, onRerun } = props;
  return (
    <section className="jobs">
      <h2>Jobs</h2>
      {props.error && (
        <p className="error" role="alert" data-testid="jobs-error">
          {props.error}
        </p>
      )}
      {jobs.length === 0 && <p className="muted">No jobs yet: set up an attack and press Run.</p>}
      <ul data-testid="jobs">
        {jobs.map((j) => (
          <li key={j.id} className={`job ${j.state}`} data-job={j.id}>
            <button type="button" className="link" onClick={() => onShow(j)} disabled={j.state !== "done"}>
              {j.label}
            </button>
            <span className="state" data-testid={`job-state-${j.id}`}>
              {j.state}
            </span>
            {(j.state === "running" || j.state === "queued") && (
              <>
                <ProgressBar
                  fraction={j.progress.fraction}
                  label={j.state === "queued" ? "queued" : `${j.progress.message} ${j.progress.done}/${j.progress.total}`}
                />
                <button type="button" onClick={() => onCancel(j.id)} data-testid={`cancel-${j.id}`}>
                  cancel
                </button>
              </>
            )}
            {onRerun && RERUNNABLE.includes(j.state) && (
              <button type="button" onClick={() => onRerun(j.id)} data-testid={`rerun-${j.id}`}>
                run again
              </button>
            )}
            {j.error && <span className="error">{j.error}</span>}
          </li>
        ))}
      </ul>
    </section>
  );
}
