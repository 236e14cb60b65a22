import { ConfigError } from "../errors.js";
import { WAITING_STATES } from "./schemas.js";
import { DEFAULT_THRESHOLDS, type StateThresholds, type StuckConfig, type WaitingState } from "./view/stuck.js";

/**
 * EVENTSTREAM_SERVE_STUCK_SECONDS ("queued=300,running=7200") and EVENTSTREAM_SERVE_STUCK_DAGS
 * ("dag_a:running=14400;dag_b:queued=60") as the view's StuckConfig. A state that cannot be stuck or a
 * value that is not a positive number is refused at start, naming the setting and the part.
 */
export function parseStuckConfig(stuckSeconds: string, stuckDags: string): StuckConfig {
  const defaults: StateThresholds = { ...DEFAULT_THRESHOLDS, ...pairs("EVENTSTREAM_SERVE_STUCK_SECONDS", stuckSeconds) };
  const perDag: Record<string, Partial<StateThresholds>> = {};
  for (const part of stuckDags.split(";").map((p) => p.trim())) {
    if (part === "") continue;
    const colon = part.lastIndexOf(":");
    if (colon <= 0)
      throw new ConfigError(
        `EVENTSTREAM_SERVE_STUCK_DAGS: "${part}" is not dag_id:state=seconds,...; e.g. etl_daily:running=14400;fast:queued=60`,
      );
    perDag[part.slice(0, colon)] = pairs("EVENTSTREAM_SERVE_STUCK_DAGS", part.slice(colon + 1));
  }
  return { defaults, perDag };
}

function pairs(setting: string, text: string): Partial<StateThresholds> {
  const out: Partial<StateThresholds> = {};
  for (const pair of text.split(",").map((p) => p.trim())) {
    if (pair === "") continue;
    const [state, value] = pair.split("=").map((s) => s.trim());
    if (!(WAITING_STATES as readonly string[]).includes(state ?? ""))
      throw new ConfigError(`${setting}: "${state}" is not a state a task can be stuck in; use ${WAITING_STATES.join(", ")}`);
    const seconds = Number(value);
    if (value === undefined || value === "" || !Number.isFinite(seconds) || seconds <= 0)
      throw new ConfigError(`${setting}: ${state}=${value ?? ""} is not a positive number of seconds`);
    out[state as WaitingState] = seconds;
  }
  return out;
}
