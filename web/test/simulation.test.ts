import { describe, expect, it } from "vitest";
import {
  fieldProblems, formatSeconds, simulationRequest, strategyRows, versusRandomLines, type Simulation, type SimulationForm,
  type Spread,
} from "../src/lib/simulation";

const form = (change: Partial<SimulationForm> = {}): SimulationForm => ({
  strategy: "margin", compare: [], start: "6", batch: "6", untilDone: false, rounds: "2", targetPrecision: "",
  seeds: "0", grid: "", ...change,
});

describe("simulation form", () => {
  it("gives the request body of the form, truth = the project's labels", () => {
    const filled = form({ compare: ["random", "margin"], seeds: "0, 1,2", targetPrecision: "0.98", grid: "6" });
    expect(simulationRequest(filled, true)).toEqual({ error: null, body: { truth: "labels", strategy: "margin",
      compare: ["random"], start: 6, batch: 6, rounds: 2, target_precision: 0.98, seeds: [0, 1, 2], grid: 6 } });
  });
  it("leaves rounds out until done, and the target precision when empty (the project's setting)", () => {
    const { body } = simulationRequest(form({ untilDone: true, rounds: "nonsense" }), false);
    expect(body).toEqual({ truth: "labels", strategy: "margin", start: 6, batch: 6, seeds: [0] });
  });
  it.each([
    [{ start: "-1" }, "start: give a whole number"],
    [{ start: "2.5" }, "start: give a whole number"],
    [{ batch: "0" }, "batch: give a whole number from 1"],
    [{ rounds: "" }, 'or tick "until done"'],
    [{ targetPrecision: "1" }, "target precision"],
    [{ targetPrecision: "0.4" }, "target precision"],
    [{ seeds: " , " }, "seeds: give at least one"],
    [{ seeds: "0,x" }, "seeds: x is not a whole number"],
    [{ seeds: "0,1,2,3,4,5,6,7,8,9,10" }, "seeds: at most 10"],
    [{ strategy: "best" }, "strategy: choose one of"],
    [{ compare: ["nope"] }, "compare: nope is not a strategy"],
    [{ grid: "5" }, "grid pages: 4, 6, 9"],
  ])("refuses %o with a message the user can act on", (change, message) => {
    const checked = simulationRequest(form(change), true);
    expect(checked.body).toBeNull();
    expect(checked.error).toContain(message);
  });
  it("puts a 422's fields in one line, and leaves other errors to the caller", () => {
    expect(fieldProblems([{ loc: ["body", "seeds", 0], msg: "Input should be greater than or equal to 0" },
      { loc: ["body", "compare"], msg: "List should have at most 10 items" }]))
      .toBe("seeds.0: Input should be greater than or equal to 0; compare: List should have at most 10 items");
    expect(fieldProblems("--start 99: only 24 items are in the pool")).toBeNull();
    expect(fieldProblems([])).toBeNull();
  });
  it("asks for fine-tuning the last round's model only when ticked", () => {
    expect(simulationRequest(form({ fromPrevious: true }), false).body?.from_previous).toBe(true);
    expect(simulationRequest(form({ fromPrevious: false }), false).body).not.toHaveProperty("from_previous");
  });
  it("refuses grid pages outside classification", () => {
    expect(simulationRequest(form({ grid: "4" }), false).error).toContain("only classification projects");
  });
});

const spread = (mean: number, min = mean, max = mean, n = 1): Spread => ({ mean, min, max, std: 0, n });

const simulation: Simulation = { summary: { quality_goal: 0.98, best_by_effort_ratio: "margin", strategies: {
  random: { human_seconds: spread(300), scratch_seconds: spread(1200), effort_ratio: spread(4), dataset_quality:
    spread(0.97), auto_accepted: spread(30), auto_accepted_wrong: spread(1), seconds_to_goal: null,
    effort_ratio_at_goal: null, seeds_reaching_goal: 0, seeds: 1 },
  margin: { human_seconds: spread(240, 200, 280, 2), scratch_seconds: spread(1200, 1200, 1200, 2),
    effort_ratio: spread(5.1234, 4.29, 6, 2), dataset_quality: spread(0.99, 0.99, 0.99, 2),
    auto_accepted: spread(36.5, 35, 38, 2), auto_accepted_wrong: spread(0, 0, 0, 2), seconds_to_goal: spread(5400),
    effort_ratio_at_goal: spread(2), seeds_reaching_goal: 1, seeds: 2 },
}, versus_random: {
  margin: { compared: false, reason: "not every seed of margin and random reached quality 0.98" },
} } };

describe("simulation result", () => {
  it("writes one row per strategy: means, the seeds' range where they differ", () => {
    expect(strategyRows(simulation)).toEqual([
      { strategy: "random", best: false, effortRatio: "4.00×", humanTime: "5.0 min vs 20.0 min by hand",
        datasetQuality: "0.970", timeToGoal: "not reached (0.98)", autoAccepted: "30 (1 wrong)" },
      { strategy: "margin", best: true, effortRatio: "5.12× (4.29×–6.00×)",
        humanTime: "4.0 min (3.3 min–4.7 min) vs 20.0 min by hand", datasetQuality: "0.990",
        timeToGoal: "1.5 h (1 of 2 seeds)", autoAccepted: "37 (0 wrong)" },
    ]);
  });
  it("has a dash for a figure no seed has", () => {
    const [row] = strategyRows({ summary: { ...simulation.summary, strategies: { random: {
      ...simulation.summary.strategies.random, effort_ratio: null, auto_accepted: null } } } });
    expect(row).toMatchObject({ best: false, effortRatio: "–", autoAccepted: "–" });
  });
  it("says each strategy against random, saved or lost, and whether beyond the seeds' spread", () => {
    expect(versusRandomLines(simulation)).toEqual(
      ["margin vs random: not compared (not every seed of margin and random reached quality 0.98)"]);
    const lines = versusRandomLines({ summary: { ...simulation.summary, versus_random: {
      margin: { compared: true, seconds_saved_vs_random: 120, share_saved_vs_random: 0.25, beyond_seed_spread: true },
      entropy: { compared: true, seconds_saved_vs_random: -30, share_saved_vs_random: -0.0625,
        beyond_seed_spread: false },
    } } });
    expect(lines).toEqual([
      "margin vs random: 2.0 min (25 %) less human time to quality 0.98, beyond the spread over seeds",
      "entropy vs random: 30 s (6 %) more human time to quality 0.98, within the spread over seeds",
    ]);
  });
  it("formats seconds in the unit a person reads best", () => {
    expect([formatSeconds(44.6), formatSeconds(750), formatSeconds(7560)]).toEqual(["45 s", "12.5 min", "2.1 h"]);
  });
});
