import { useEffect, useState } from "react";
import { type Registry, api } from "./api/client";
import { AttackLab } from "./components/AttackLab";
import { RunsView } from "./components/RunsView";

type Tab = "lab" | "runs";

export function App() {
  const [registry, setRegistry] = useState<Registry | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [openRun, setOpenRun] = useState<{ id: string; at: number } | null>(null);
  const [tab, setTab] = useState<Tab>(() => (window.location.hash === "#runs" ? "runs" : "lab"));

  useEffect(() => {
    api.registry().then(setRegistry, (e: unknown) => setError(e instanceof Error ? e.message : String(e)));
  }, []);

  const go = (t: Tab) => {
    setTab(t);
    window.location.hash = t;
  };

  return (
    <>
      <header>
        <h1>idlsec lab</h1>
        <nav>
          <button type="button" className={tab === "lab" ? "active" : ""} onClick={() => go("lab")} data-testid="tab-lab">
            Attack lab
          </button>
          <button type="button" className={tab === "runs" ? "active" : ""} onClick={() => go("runs")} data-testid="tab-runs">
            Runs
          </button>
        </nav>
        {registry && (
          <span className="muted small">
            idlsec {registry.version} · {registry.device} · <a href="/openapi.json">API</a>
          </span>
        )}
      </header>
      <main>
        {error && (
          <p className="error" role="alert">
            cannot reach the idlsec server: {error}
          </p>
        )}
        {/* both stay mounted: switching tabs keeps the form, the jobs and the result */}
        <div hidden={tab !== "lab"}>{registry && <AttackLab
              registry={registry}
              onOpenRun={(id) => {
                setOpenRun({ id, at: Date.now() });
                go("runs");
              }}
            />}</div>
        <div hidden={tab !== "runs"}>
          <RunsView open={openRun} />
        </div>
      </main>
    </>
  );
}
