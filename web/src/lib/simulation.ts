/** The dashboard's simulation card without the DOM: the form checked into a `POST /simulate` body, and a finished
 * simulation's JSON (docs/simulate.md, "Outputs") turned into the rows and lines the card shows. */

/** The sampling strategies `labelloop simulate` knows (services/labelling/strategies.py; no API lists them). */
export const SIMULATION_STRATEGIES = ["random", "least-confidence", "margin", "entropy", "k-center", "hybrid"];
export const GRID_PAGES = [4, 6, 9];
export const MAX_SEEDS = 10;
export const MAX_COMPARED = 10;

/** What the form holds, as the inputs give it (text). */
export interface SimulationForm {
  strategy: string;
  compare: string[];
  start: string;
  batch: string;
  untilDone: boolean;
  rounds: string;
  targetPrecision: string;
  seeds: string;
  grid: string;
  /** Each round fine-tunes the round before's model (detection projects: the detector has `--from`). */
  fromPrevious?: boolean;
}

/** The body of `POST /api/projects/{id}/simulate` (the server's `SimulateIn`). */
export interface SimulateBody {
  truth: "labels";
  strategy: string;
  compare?: string[];
  start: number;
  batch: number;
  rounds?: number;
  target_precision?: number;
  seeds: number[];
  grid?: number;
  from_previous?: boolean;
}

export type Checked = { body: SimulateBody; error: null } | { body: null; error: string };

function wholeNumber(text: string, what: string, min: number, max: number): number | string {
  const value = text.trim();
  if (!/^\d+$/.test(value)) return `${what}: give a whole number (${min} or more)`;
  const n = Number(value);
  if (n < min || n > max) return `${what}: give a whole number from ${min} to ${max}`;
  return n;
}

/** The form as a request body, or the first problem in words; `grids`: the project kind labels on grid pages. */
export function simulationRequest(form: SimulationForm, grids: boolean): Checked {
  const fail = (error: string): Checked => ({ body: null, error });
  if (!SIMULATION_STRATEGIES.includes(form.strategy)) {
    return fail(`strategy: choose one of ${SIMULATION_STRATEGIES.join(", ")}`);
  }
  const compare = form.compare.filter((s) => s !== form.strategy);
  const unknown = compare.find((s) => !SIMULATION_STRATEGIES.includes(s));
  if (unknown !== undefined) return fail(`compare: ${unknown} is not a strategy`);
  if (compare.length > MAX_COMPARED) return fail(`compare: at most ${MAX_COMPARED} strategies`);
  const start = wholeNumber(form.start, "start", 0, 1_000_000);
  if (typeof start === "string") return fail(start);
  const batch = wholeNumber(form.batch, "batch", 1, 1_000_000);
  if (typeof batch === "string") return fail(batch);
  const body: SimulateBody = { truth: "labels", strategy: form.strategy, start, batch, seeds: [] };
  if (compare.length) body.compare = [...new Set(compare)];
  if (!form.untilDone) {
    const rounds = wholeNumber(form.rounds, "rounds", 1, 10_000);
    if (typeof rounds === "string") return fail(`${rounds}, or tick "until done"`);
    body.rounds = rounds;
  }
  if (form.targetPrecision.trim()) {
    const precision = Number(form.targetPrecision.trim());
    if (!Number.isFinite(precision) || precision < 0.5 || precision >= 1) {
      return fail("target precision: give a number from 0.5 up to (not including) 1, e.g. 0.95; or leave it empty");
    }
    body.target_precision = precision;
  }
  const seeds = form.seeds.split(",").map((s) => s.trim()).filter((s) => s);
  if (!seeds.length) return fail("seeds: give at least one, e.g. 0 or 0,1,2");
  if (seeds.length > MAX_SEEDS) return fail(`seeds: at most ${MAX_SEEDS}`);
  for (const seed of seeds) {
    if (!/^\d+$/.test(seed)) {
      return fail(`seeds: ${seed} is not a whole number; give them separated by commas, e.g. 0,1,2`);
    }
    body.seeds.push(Number(seed));
  }
  body.seeds = [...new Set(body.seeds)];
  if (form.grid) {
    if (!grids) return fail("grid pages: only classification projects label on grid pages");
    const grid = Number(form.grid);
    if (!GRID_PAGES.includes(grid)) return fail(`grid pages: ${GRID_PAGES.join(", ")} images, or none`);
    body.grid = grid;
  }
  if (form.fromPrevious) body.from_previous = true;
  return { body, error: null };
}

/** A 422's `detail` (the fields the form did not check, as FastAPI lists them) in one line; null for any other. */
export function fieldProblems(detail: unknown): string | null {
  if (!Array.isArray(detail) || !detail.length) return null;
  return detail.map((d: { loc?: unknown[]; msg?: string }) =>
    `${(d.loc ?? []).filter((part) => part !== "body").join(".")}: ${d.msg ?? "invalid"}`).join("; ");
}

/** A figure's spread over seeds, as report.py writes it (null: no seed has the figure). */
export interface Spread { mean: number; min: number; max: number; std: number; n: number }
export interface StrategySummary {
  human_seconds: Spread | null; scratch_seconds: Spread | null; effort_ratio: Spread | null;
  dataset_quality: Spread | null; auto_accepted: Spread | null; auto_accepted_wrong: Spread | null;
  seconds_to_goal: Spread | null; effort_ratio_at_goal: Spread | null; seeds_reaching_goal: number; seeds: number;
}
export interface VersusRandom {
  compared: boolean; reason?: string; seconds_saved_vs_random?: number; share_saved_vs_random?: number;
  beyond_seed_spread?: boolean;
}
export interface Simulation {
  summary: {
    quality_goal: number; strategies: Record<string, StrategySummary>; versus_random: Record<string, VersusRandom>;
    best_by_effort_ratio: string;
  };
}

/** Seconds in the unit a person reads best: "45 s", "12.5 min", "2.1 h". */
export function formatSeconds(seconds: number): string {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 90 * 60) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

/** The mean, and the lowest to highest seed when the seeds differ. */
function spread(value: Spread | null, format: (v: number) => string): string {
  if (!value) return "–";
  return value.n > 1 && value.min !== value.max
    ? `${format(value.mean)} (${format(value.min)}–${format(value.max)})` : format(value.mean);
}

export interface StrategyRow {
  strategy: string; best: boolean; effortRatio: string; humanTime: string; datasetQuality: string; timeToGoal: string;
  autoAccepted: string;
}

/** One row per strategy, in the order they ran: the figures of the card's table, means over seeds. */
export function strategyRows(simulation: Simulation): StrategyRow[] {
  const { strategies, best_by_effort_ratio: best, quality_goal: goal } = simulation.summary;
  return Object.entries(strategies).map(([name, s]) => ({
    strategy: name,
    best: name === best && Object.keys(strategies).length > 1,
    effortRatio: spread(s.effort_ratio, (v) => `${v.toFixed(2)}×`),
    humanTime: s.human_seconds && s.scratch_seconds
      ? `${spread(s.human_seconds, formatSeconds)} vs ${formatSeconds(s.scratch_seconds.mean)} by hand` : "–",
    datasetQuality: spread(s.dataset_quality, (v) => v.toFixed(3)),
    timeToGoal: s.seeds_reaching_goal
      ? `${spread(s.seconds_to_goal, formatSeconds)}${s.seeds_reaching_goal < s.seeds
        ? ` (${s.seeds_reaching_goal} of ${s.seeds} seeds)` : ""}` : `not reached (${goal})`,
    autoAccepted: s.auto_accepted // means only: a range inside the brackets would not read
      ? `${Math.round(s.auto_accepted.mean)} (${Math.round(s.auto_accepted_wrong?.mean ?? 0)} wrong)` : "–",
  }));
}

/** Each strategy against random, in words: what it saved to the quality goal, and whether that beats the seeds'
 * spread; empty when random did not run beside another strategy. */
export function versusRandomLines(simulation: Simulation): string[] {
  const goal = simulation.summary.quality_goal;
  return Object.entries(simulation.summary.versus_random ?? {}).map(([name, v]) => {
    if (!v.compared) return `${name} vs random: not compared (${v.reason ?? "not every seed reached the goal"})`;
    const saved = v.seconds_saved_vs_random ?? 0;
    const share = Math.abs(100 * (v.share_saved_vs_random ?? 0)).toFixed(0);
    const verdict = v.beyond_seed_spread ? "beyond the spread over seeds" : "within the spread over seeds";
    return saved >= 0
      ? `${name} vs random: ${formatSeconds(saved)} (${share} %) less human time to quality ${goal}, ${verdict}`
      : `${name} vs random: ${formatSeconds(-saved)} (${share} %) more human time to quality ${goal}, ${verdict}`;
  });
}
