import { describe, expect, it } from "vitest";
import { runContexts } from "../../../src/airflow/run-context.js";

describe("runContexts", () => {
  it("turns dag_run rows read at start into the mapper's run context, timestamps in the events' form", () => {
    const rows = [
      {
        dag_id: "d",
        run_id: "scheduled__1",
        run_type: "scheduled",
        logical_date: "2026-11-24 00:00:00.000001+00",
        data_interval_start: "2026-11-24 00:00:00+00",
        data_interval_end: "2026-11-25 02:00:00+02",
        clear_number: 1,
      },
      {
        dag_id: "d",
        run_id: "manual__2",
        run_type: null,
        logical_date: null,
        data_interval_start: null,
        data_interval_end: null,
        clear_number: null,
      },
    ];
    expect(runContexts(rows)).toEqual([
      {
        dagId: "d",
        runId: "scheduled__1",
        ctx: {
          logicalDate: "2026-11-24T00:00:00.000001Z",
          runType: "scheduled",
          dataIntervalStart: "2026-11-24T00:00:00.000000Z",
          dataIntervalEnd: "2026-11-25T00:00:00.000000Z",
          clearNumber: 1,
        },
      },
      {
        dagId: "d",
        runId: "manual__2",
        ctx: { logicalDate: null, runType: null, dataIntervalStart: null, dataIntervalEnd: null, clearNumber: null },
      },
    ]);
  });
});
