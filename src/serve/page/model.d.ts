// Types of model.js for the TypeScript that imports it (test/unit/page-model.test.ts). model.js itself
// stays plain JavaScript: the browser loads it as written, with no build step.
import type { RunSummary, RunView, TaskView } from "../schemas.js";
import type { AirflowEvent } from "../../airflow/events.js";

export declare const FINISHED_RUN_STATES: string[];

export interface PageRun {
  run_id: string;
  logical_date: string | null;
  run_type: string | null;
  state: string | null;
  start_date: string | null;
  end_date: string | null;
  clear_number: number | null;
  summary: RunSummary | null;
  position: string;
  tasks: Map<string, TaskView>;
}

export interface DagModel {
  dagId: string;
  runs: Map<string, PageRun>;
}

export interface Changes {
  structural: boolean;
  cells: Set<string>;
  runs: Set<string>;
  finished: Set<string>;
  reload: boolean;
}

export declare function cellKey(runId: string, taskId: string): string;
export declare function createDagModel(dagId: string): DagModel;
export declare function emptyChanges(): Changes;
export declare function applyRunView(model: DagModel, view: RunView, changes?: Changes): Changes;
export declare function applyEvent(model: DagModel, ev: AirflowEvent, changes?: Changes): Changes;
export declare function visibleRuns(model: DagModel, limit: number): PageRun[];
export declare function taskIds(runs: PageRun[]): string[];
export declare function cellState(run: PageRun, taskId: string): { state: string; label: string };
export declare function finishedRuns(model: DagModel, limit: number): PageRun[];
