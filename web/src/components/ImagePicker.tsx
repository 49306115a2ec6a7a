import { useState } from "react";
import { ApiError, type DatasetInfo, type ModelInfo, type Upload, api } from "../api/client";
import { type FormState, resizeNote } from "../lib/params";
import { useDatasetImage } from "../lib/useDataset";

type Set = <K extends keyof FormState>(k: K, v: FormState[K]) => void;

/** How an uploaded image is fitted to the model's input (nothing when it fits). */
export function ResizeNote({ upload, model }: { upload: Pick<Upload, "width" | "height">; model: ModelInfo | undefined }) {
  const note = model ? resizeNote(upload, model.input_size) : null;
  return note ? (
    <p className="muted small" data-testid="resize-note">
      {note}
    </p>
  ) : null;
}

/** The radio label of the dataset source: "cifar10 test image", "folder:pets image". */
export function sourceLabel(model: ModelInfo | undefined, dataset: string): string {
  if (!model || model.datasets.length > 1) return "image from";
  return dataset.startsWith("folder:") ? `${dataset} image` : `${dataset} test image`;
}

/** The attacked image: an index into one of the model's datasets, or an uploaded file. */
export function ImagePicker(props: { form: FormState; set: Set; model: ModelInfo | undefined; dataset: DatasetInfo | null }) {
  const { form, set, model, dataset } = props;
  const [upload, setUpload] = useState<Upload | null>(null);
  const [uploadError, setUploadError] = useState<string | null>(null);
  const preview = useDatasetImage(dataset, form.index, form.source === "dataset");
  const maxIndex = Math.max(0, (dataset?.size ?? 1) - 1);
  const sources = model?.datasets ?? [];
  const current = form.dataset || sources[0] || "";

  const onUpload = async (file: File | undefined) => {
    setUploadError(null);
    setUpload(null);
    set("upload", null);
    if (!file) return;
    try {
      const up = await api.upload(file, file.name);
      set("upload", up.id);
      setUpload(up);
    } catch (e) {
      setUploadError(e instanceof ApiError ? e.message : `upload failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  };

  return (
    <fieldset>
      <legend>image</legend>
      {sources.length > 0 && (
        <label className="inline">
          <input type="radio" checked={form.source === "dataset"} onChange={() => set("source", "dataset")} data-testid="source-dataset" />{" "}
          {sourceLabel(model, current)}
        </label>
      )}
      {sources.length > 1 && (
        <select value={current} onChange={(e) => set("dataset", e.target.value)} data-testid="dataset" aria-label="dataset">
          {sources.map((d) => (
            <option key={d} value={d}>
              {d}
            </option>
          ))}
        </select>
      )}
      <label className="inline">
        <input type="radio" checked={form.source === "upload"} onChange={() => set("source", "upload")} data-testid="source-upload" /> upload
      </label>
      {form.source === "dataset" && sources.length > 0 ? (
        <div className="row">
          <input
            type="number"
            min={0}
            max={maxIndex}
            value={form.index}
            onChange={(e) => set("index", Math.max(0, Math.min(maxIndex, Number(e.target.value) || 0)))}
            data-testid="index"
            aria-label="image index"
          />
          <button type="button" onClick={() => set("index", Math.floor(Math.random() * (maxIndex + 1)))}>
            random
          </button>
          {preview && (
            <span className="preview">
              <img src={preview.image} alt="selected" /> {preview.label_name}
            </span>
          )}
          {dataset?.error && <p className="error">{dataset.error}</p>}
        </div>
      ) : (
        <div className="row">
          <input type="file" accept="image/*" onChange={(e) => void onUpload(e.target.files?.[0])} data-testid="upload" />
          {upload && <img className="preview" src={upload.image} alt="uploaded" />}
          {upload && <ResizeNote upload={upload} model={model} />}
          {uploadError && (
            <p className="error" role="alert" data-testid="upload-error">
              {uploadError}
            </p>
          )}
        </div>
      )}
    </fieldset>
  );
}
