import { useState } from "react";
import { type JobStatus, type Registry, api } from "../api/client";
import { type FormState, toBatchRequest, toRequest } from "../lib/params";
import { useJobs } from "../lib/useJobs";
import { AttackForm, initialForm } from "./AttackForm";
import { BatchSummary } from "./BatchSummary";
import { ConnectionBanner } from "./ConnectionBanner";
import { JobList } from "./JobList";
import { ResultView } from "./ResultView";

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** The lab page: the attack form, the jobs it submitted, and the output of the one last shown. */
export function AttackLab({ registry, onOpenRun }: { registry: Registry; onOpenRun: (id: string) => void }) {
  const [form, setForm] = useState<FormState>(() => initialForm(registry));
  const [error, setError] = useState<string | null>(null);
  const { jobs, result, comparison, batch, track, show, connected } = useJobs(setError);
  const attack = registry.attacks.find((a) => a.name === form.attack);

  const submit = (request: () => Promise<JobStatus>) => {
    setError(null);
    Promise.resolve().then(request).then(track, (e: unknown) => setError(message(e)));
  };

  return (
    <div className="lab">
      <AttackForm
        registry={registry}
        form={form}
        setForm={setForm}
        error={error}
        onRun={() => submit(() => api.submit(toRequest(form, attack)))}
        onRunBatch={(n) => submit(() => api.submitBatch(toBatchRequest(form, attack, n)))}
      />
      <div className="main">
        <ConnectionBanner connected={connected} />
        <JobList
          jobs={jobs}
          onShow={show}
          onCancel={(id) => void api.cancel(id).catch(() => undefined)}
          onRerun={(id) => submit(() => api.rerun(id))}
        />
        {batch && <BatchSummary batch={batch} onOpenRun={onOpenRun} />}
        {result && (
          <ResultView
            result={result}
            registry={registry}
            comparison={comparison}
            onCompare={(id, names) => submit(() => api.compare(id, names))}
          />
        )}
      </div>
    </div>
  );
}
