import { describe, expect, it } from "vitest";
import type { AttackInfo, ParamInfo } from "../api/client";
import { param } from "./fixtures";
import { type FormState, defaultText, formErrors, paramError, paramOfError, paramValue, parseValue, resizeNote, toBatchRequest, toRequest } from "./params";


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
    param("alpha", "float", 2 / 255, { unit: "1/255", min: 0, max: 0.5, min_exclusive: true }),
    param("steps", "int", 10, { min: 1, max: 10000 }),
    param("random_start", "bool", true),
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
  extra: { alpha: "1", random_start: "false", unknown: "1", steps: "99" },
  surrogate: "cifar10-resnet32",
};

describe("toRequest", () => {
  it("converts eps and alpha from 1/255 units and keeps only the attack's parameters", () => {
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

describe("typed parameters", () => {
  const alpha = pgd.params[0] as ParamInfo;
  const steps = pgd.params[1] as ParamInfo;
  const schedule = param("schedule", "choice", null, { choices: ["constant", "linear"], nullable: true, none_means: "the interpreter's profile" });
  it("sends pixel budgets in [0, 1] units, booleans and choices as typed, empty as the default", () => {
    expect(paramValue(alpha, "2")).toBeCloseTo(2 / 255);
    expect(paramValue(alpha, "")).toBeUndefined();
    expect(paramValue(steps, "20")).toBe(20);
    expect(paramValue(pgd.params[2] as ParamInfo, "false")).toBe(false);
    expect(paramValue(schedule, "linear")).toBe("linear");
  });
  it("refuses values outside the registry's range, in the unit shown", () => {
    expect(paramError(alpha, "0")).toBe("alpha must be > 0/255");
    expect(paramError(alpha, "200")).toBe("alpha must be ≤ 127.5/255");
    expect(paramError(steps, "2.5")).toBe("steps must be a whole number");
    expect(paramError(steps, "0")).toBe("steps must be ≥ 1");
    expect(paramError(steps, "abc")).toBe("steps must be a number");
    expect(paramError(steps, "")).toBeNull();
    expect(formErrors({ ...form, steps: "0", extra: { alpha: "300" } }, pgd)).toEqual({
      alpha: "alpha must be ≤ 127.5/255", steps: "steps must be ≥ 1" });
  });
  it("shows defaults in the unit of the field, None as what it means", () => {
    expect(defaultText(alpha)).toBe("2");
    expect(defaultText(schedule)).toBe("default: the interpreter's profile");
    expect(defaultText(pgd.params[2] as ParamInfo)).toBe("yes");
  });
  it("finds the parameter a server error names", () => {
    const adv = { ...pgd, params: [...pgd.params, param("warmup_steps", "int", null)] };
    expect(paramOfError("warmup_steps must be an integer >= 0, got -1", adv)).toBe("warmup_steps");
    expect(paramOfError("params.steps = 20000 is beyond the lab's limit", adv)).toBe("steps");
    expect(paramOfError("unknown model 'x'", adv)).toBeNull();
  });
});
