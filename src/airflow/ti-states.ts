import { AIRFLOW_STATES } from "./row-values.js";
import { OffHeapLru } from "./state-table.js";

/** What the transition check compares of a task instance. */
export interface TiValues {
  mapIndex: number;
  state: string | null;
  tryNumber: number | null;
}

/** ...and its name: dag, task, run and map index joined by NUL (tiKey). */
export interface TiState extends TiValues {
  key: string;
}

/** An entry of a table, or none. */
export const NO_ENTRY = -1;

// Number columns.
const MAP_INDEX = 0;
const STATE = 1;
const TRY = 2;
// String columns (0 is the key).
const NAME = 1;
/** A state that is not one of Airflow's, kept as it is (odd rows lose nothing). */
const ODD_STATE = 2;

const NULL_STATE = 0;
const ODD = -1;
const CODES = new Map(AIRFLOW_STATES.map((s, i) => [s, i + 1]));

function nullable(v: number): number | null {
  return Number.isNaN(v) ? null : v;
}

/**
 * The last state of each task instance by row key (2.x: its name; 3.x: its id), least recently
 * touched first out, held outside the JavaScript heap (state-table.ts says why). A state is a code
 * (Airflow's states, in AIRFLOW_STATES order), so reading one back gives the shared constant.
 */
export class TiStateTable {
  private readonly t: OffHeapLru;

  constructor(capacity: number) {
    // The second index finds a row by its name: XComs name a task instance so (on 3.x the key is
    // its id), and it costs no second copy of the names.
    this.t = new OffHeapLru(capacity, { numbers: 3, strings: 2, secondIndex: true });
  }

  get size(): number {
    return this.t.size;
  }

  /** The row's entry (made the newest), or NO_ENTRY. */
  find(key: string): number {
    return this.t.find(key, true);
  }

  /** The entry's values, as a new object. */
  values(e: number): TiValues {
    const code = this.t.number(e, STATE);
    return {
      mapIndex: this.t.number(e, MAP_INDEX),
      state: code === NULL_STATE ? null : code === ODD ? this.t.string(e, ODD_STATE) : AIRFLOW_STATES[code - 1]!,
      tryNumber: nullable(this.t.number(e, TRY)),
    };
  }

  /** The try of the row last recorded under `name` (nothing is touched); undefined when none is held. */
  tryByName(name: string): number | null | undefined {
    const e = this.t.findBy(name);
    return e === NO_ENTRY ? undefined : nullable(this.t.number(e, TRY));
  }

  /** The row's state (made the newest), or undefined. */
  get(key: string): TiState | undefined {
    const e = this.t.find(key, true);
    if (e === NO_ENTRY) return undefined;
    return { key: this.t.string(e, NAME)!, ...this.values(e) };
  }

  /** Records the row's state and name; the entry is the newest. */
  set(key: string, st: TiState): void {
    this.writeAt(this.t.upsert(key), st);
  }

  /** Records the entry's state and name (rewritten only when it changed). */
  writeAt(e: number, st: TiState): void {
    if (!this.t.stringIs(e, NAME, st.key)) this.t.setString(e, NAME, st.key);
    this.write(e, st);
  }

  /** Overwrites the entry's values (its name stays). */
  write(e: number, v: TiValues): void {
    const known = v.state === null ? NULL_STATE : (CODES.get(v.state) ?? ODD);
    if (known === ODD) {
      if (!this.t.stringIs(e, ODD_STATE, v.state)) this.t.setString(e, ODD_STATE, v.state);
    } else if (this.t.number(e, STATE) === ODD) this.t.setString(e, ODD_STATE, null);
    this.t.setNumber(e, STATE, known);
    this.t.setNumber(e, MAP_INDEX, v.mapIndex);
    this.t.setNumber(e, TRY, v.tryNumber ?? NaN);
  }

  delete(key: string): void {
    this.t.delete(key);
  }

  removeEntry(e: number): void {
    this.t.removeEntry(e);
  }

  clear(): void {
    this.t.clear();
  }
}
