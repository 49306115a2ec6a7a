// The dataset an attack form draws its images from, and the preview of the selected image.
import { useEffect, useState } from "react";
import { type DatasetImage, type DatasetInfo, api } from "../api/client";

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** The dataset's info (null while loading; size 0 and an error when it is not available). */
export function useDataset(name: string | null | undefined): DatasetInfo | null {
  const [dataset, setDataset] = useState<DatasetInfo | null>(null);
  useEffect(() => {
    setDataset(null);
    if (!name) return;
    let live = true;
    api.dataset(name).then(
      (d) => live && setDataset(d),
      (e: unknown) => live && setDataset({ name, classes: [], size: 0, error: message(e) }),
    );
    return () => {
      live = false;
    };
  }, [name]);
  return dataset;
}

/** The image at ``index`` of a loaded dataset (null while loading, on error or when inactive). */
export function useDatasetImage(dataset: DatasetInfo | null, index: number, active: boolean): DatasetImage | null {
  const [preview, setPreview] = useState<DatasetImage | null>(null);
  useEffect(() => {
    if (!active || !dataset || dataset.size === 0 || index >= dataset.size) return;
    let live = true;
    api.datasetImage(dataset.name, index).then(
      (img) => live && setPreview(img),
      () => live && setPreview(null),
    );
    return () => {
      live = false;
    };
  }, [dataset, index, active]);
  return preview && preview.dataset === dataset?.name ? preview : null;
}
