import { useCallback, useState } from "react";
import { type JobStatus, type Registry, api } from "../api/client";
import { type FormState, toBatchRequest, toRequest } from "../lib/params";
import { useJobs } from "../lib/useJobs";
import { AttackForm, type LabError, initialForm } from "./AttackForm";
import { BatchSummary } from "./BatchSummary";
import { ConnectionBanner } from "./ConnectionBanner";
import { JobList } from "./JobList";
import { ResultView } from "./ResultView";

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** The lab page: the attack form, the jobs it submitted, and the output of the one last shown. */
export function AttackLab({ registry, onOpenRun }: { registry: Registry; onOpenRun: (id: string) => void }) {
  const [form, setForm] = useState<FormState>(() => initialForm(registry));
  const [error, setError] = useState<LabError | null>(null);
  const onJobError = useCallback((m: string) => setError({ where: "jobs", message: m }), []);
  const { jobs, result, comparison, batch, track, show, connected } = useJobs(onJobError);
  const attack = registry.attacks.find((a) => a.name === form.attack);

  // the error is shown under the control whose action caused it
  const submit = (where: LabError["where"], request: () => Promise<JobStatus>) => {
    setError(null);
    Promise.resolve().then(request).then(track, (e: unknown) => setError({ where, message: message(e) }));
  };

  return (
    <div className="lab">
      <AttackForm
        registry={registry}
        form={form}
        setForm={setForm}
        error={error}
        onRun={() => submit("run", () => api.submit(toRequest(form, attack)))}
        onRunBatch={(n) => submit("batch", () => api.submitBatch(toBatchRequest(form, attack, n)))}
      />
      <div className="main">
        <ConnectionBanner connected={connected} />
        <JobList
          jobs={jobs}
          onShow={show}
          onCancel={(id) => void api.cancel(id).catch(() => undefined)}
          onRerun={(id) => submit("jobs", () => api.rerun(id))}
          error={error?.where === "jobs" ? error.message : null}
        />
        {batch && <BatchSummary batch={batch} onOpenRun={onOpenRun} />}
        {result && (
          <ResultView
            result={result}
            registry={registry}
            comparison={comparison}
            onCompare={(id, names) => submit("compare", () => api.compare(id, names))}
            compareError={error?.where === "compare" ? error.message : null}
          />
        )}
      </div>
    </div>
  );
}
