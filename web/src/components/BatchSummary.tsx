import type { BatchResult } from "../api/client";
import { formatCell } from "../lib/table";

/** A finished batch: its summary and a link to the saved run. */
export function BatchSummary({ batch, onOpenRun }: { batch: BatchResult; onOpenRun: (id: string) => void }) {
  const s = batch.summary;
  return (
    <section className="batch-result" data-testid="batch-result">
      <h2>Batch saved as run {batch.run_id}</h2>
      <p>
        {formatCell(s.n)} images · success rate {formatCell(s.asr)} · top-k IoU {formatCell(s.iou_topk_mean)} · map L1{" "}
        {formatCell(s.map_l1_mean)}{" "}
        <button type="button" onClick={() => onOpenRun(batch.run_id)} data-testid="open-run">
          open in Runs
        </button>
      </p>
    </section>
  );
}
