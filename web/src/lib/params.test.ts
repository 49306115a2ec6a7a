import { describe, expect, it } from "vitest";
import type { AttackInfo } from "../api/client";
import { type FormState, parseValue, resizeNote, toBatchRequest, toRequest } from "./params";

describe("parseValue", () => {
  it.each([
    ["", undefined],
    ["  ", undefined],
    ["12", 12],
    ["-3", -3],
    ["0.5", 0.5],
    ["1e-3", 0.001],
    ["8/255", 8 / 255],
    ["true", true],
    ["false", false],
    ["null", null],
    ["linear", "linear"],
  ])("%j -> %j", (text, value) => {
    expect(parseValue(text)).toEqual(value);
  });
});

const pgd: AttackInfo = {
  name: "pgd",
  doc: "",
  needs_interpreter: false,
  black_box: false,
  params: [
    { name: "alpha", default: 2 / 255, kind: "float" },
    { name: "steps", default: 10, kind: "int" },
    { name: "random_start", default: true, kind: "bool" },
  ],
};

const form: FormState = {
  model: "cifar10-resnet20",
  source: "dataset",
  dataset: "",
  index: 7,
  upload: null,
  interpreter: "cam",
  attack: "pgd",
  eps255: 8,
  steps: "5",
  targeted: true,
  target: "3",
  seed: 1,
  extra: { alpha: "1/255", random_start: "false", unknown: "1", steps: "99" },
  surrogate: "cifar10-resnet32",
};

describe("toRequest", () => {
  it("converts eps from 1/255 units and keeps only the attack's parameters", () => {
    expect(toRequest(form, pgd)).toEqual({
      model: "cifar10-resnet20",
      interpreter: "cam",
      attack: "pgd",
      eps: 8 / 255,
      targeted: true,
      seed: 1,
      index: 7,
      steps: 5,
      target: 3,
      params: { alpha: 1 / 255, random_start: false },
    });
  });
  it("sends the upload instead of an index, and no target when untargeted or random", () => {
    const req = toRequest({ ...form, source: "upload", upload: "abc", targeted: false, steps: "" }, pgd);
    expect(req.upload).toBe("abc");
    expect(req.index).toBeUndefined();
    expect(req.target).toBeUndefined();
    expect(req.steps).toBeUndefined();
    expect(toRequest({ ...form, target: "" }, pgd).target).toBeUndefined();
  });
  it("sends the chosen dataset with an index only", () => {
    expect(toRequest(form, pgd).dataset).toBeUndefined();
    expect(toRequest({ ...form, dataset: "folder:pets" }, pgd).dataset).toBe("folder:pets");
    expect(toRequest({ ...form, dataset: "folder:pets", source: "upload", upload: "u" }, pgd).dataset).toBeUndefined();
  });
  it("sends a surrogate for black-box attacks only", () => {
    expect(toRequest(form, pgd).surrogate).toBeUndefined();
    expect(toRequest(form, { ...pgd, black_box: true }).surrogate).toBe("cifar10-resnet32");
    expect(toRequest({ ...form, surrogate: "" }, { ...pgd, black_box: true }).surrogate).toBeUndefined();
  });
  it("drops steps for an attack without a steps parameter", () => {
    expect(toRequest(form, { ...pgd, params: [] }).steps).toBeUndefined();
  });
});

describe("toBatchRequest", () => {
  it("keeps the attack settings, drops the image and the target", () => {
    expect(toBatchRequest(form, pgd, 16)).toEqual({
      model: "cifar10-resnet20",
      interpreter: "cam",
      attack: "pgd",
      n: 16,
      eps: 8 / 255,
      targeted: true,
      seed: 1,
      steps: 5,
      params: { alpha: 1 / 255, random_start: false },
      batch_size: 16,
    });
    expect(toBatchRequest(form, pgd, 100).batch_size).toBe(32);
  });
});

describe("resizeNote", () => {
  it("says how an upload is fitted to the model's input, and nothing when it already fits", () => {
    expect(resizeNote({ width: 32, height: 32 }, [3, 32, 32])).toBeNull();
    expect(resizeNote({ width: 640, height: 480 }, [3, 224, 224])).toBe("resized from 640×480 to 224×224: the model's input (3×224×224)");
    expect(resizeNote({ width: 64, height: 64 }, [1, 64, 64])).toBe("converted to grayscale: the model's input (1×64×64)");
    expect(resizeNote({ width: 40, height: 30 }, [1, 28, 28])).toBe(
      "resized from 40×30 to 28×28, converted to grayscale: the model's input (1×28×28)",
    );
  });
});
