import { describe, expect, it } from "vitest";
import { DagRunEvent, TaskInstanceEvent } from "../../../src/airflow/events.js";
import { dagRunEvent, position, sourceAt, taskInstanceEvent } from "../../support/events.js";

describe("test event fixtures", () => {
  it("build events the contract accepts, defaults and every op alike", () => {
    expect(TaskInstanceEvent.parse(taskInstanceEvent())).toEqual(taskInstanceEvent());
    expect(DagRunEvent.parse(dagRunEvent())).toEqual(dagRunEvent());
    for (const op of ["insert", "update", "snapshot", "delete"] as const) {
      expect(TaskInstanceEvent.safeParse(taskInstanceEvent({ op, state: "running" })).success).toBe(true);
      expect(DagRunEvent.safeParse(dagRunEvent({ op, state: "running" })).success).toBe(true);
    }
  });

  it("put the given fields over the defaults", () => {
    const e = taskInstanceEvent({ dag_id: "etl", state: "failed", source: sourceAt(position(0x16b3748, 2)) });
    expect(e).toMatchObject({ type: "task_instance", op: "update", dag_id: "etl", task_id: "task", state: "failed" });
    expect(e.source.position).toBe("00000000016B3748-00000002");
  });
});
