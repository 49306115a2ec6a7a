import { useState } from "react";
import { ApiError, type DatasetInfo, type ModelInfo, api } from "../api/client";
import type { FormState } from "../lib/params";
import { useDatasetImage } from "../lib/useDataset";

type Set = <K extends keyof FormState>(k: K, v: FormState[K]) => void;

/** The attacked image: an index into the model's dataset, or an uploaded file. */
export function ImagePicker(props: { form: FormState; set: Set; model: ModelInfo | undefined; dataset: DatasetInfo | null }) {
  const { form, set, model, dataset } = props;
  const [uploadPreview, setUploadPreview] = useState<string | null>(null);
  const [uploadError, setUploadError] = useState<string | null>(null);
  const preview = useDatasetImage(dataset, form.index, form.source === "dataset");
  const maxIndex = Math.max(0, (dataset?.size ?? 1) - 1);

  const onUpload = async (file: File | undefined) => {
    setUploadError(null);
    setUploadPreview(null);
    set("upload", null);
    if (!file) return;
    try {
      const up = await api.upload(file, file.name);
      set("upload", up.id);
      setUploadPreview(up.image);
    } catch (e) {
      setUploadError(e instanceof ApiError ? e.message : `upload failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  };

  return (
    <fieldset>
      <legend>image</legend>
      <label className="inline">
        <input type="radio" checked={form.source === "dataset"} onChange={() => set("source", "dataset")} /> {model?.dataset} test image
      </label>
      <label className="inline">
        <input type="radio" checked={form.source === "upload"} onChange={() => set("source", "upload")} data-testid="source-upload" /> upload
      </label>
      {form.source === "dataset" ? (
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
          {uploadPreview && <img className="preview" src={uploadPreview} alt="uploaded" />}
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
