import { describe, expect, it } from "vitest";
import { selectedAirflowMajors } from "../airflow/support/selection.js";

describe("EVENTSTREAM_TEST_AIRFLOW (which Airflow majors the real-Airflow tier runs)", () => {
  it("runs every major when unset or empty", () => {
    expect(selectedAirflowMajors(undefined)).toEqual(["2", "3"]);
    expect(selectedAirflowMajors(" ")).toEqual(["2", "3"]);
  });

  it("runs only the listed majors, in the supported order", () => {
    expect(selectedAirflowMajors("3")).toEqual(["3"]);
    expect(selectedAirflowMajors("2")).toEqual(["2"]);
    expect(selectedAirflowMajors("3, 2")).toEqual(["2", "3"]);
  });

  it("refuses a major it does not know, so a typo cannot run nothing and pass", () => {
    expect(() => selectedAirflowMajors("4")).toThrow(/EVENTSTREAM_TEST_AIRFLOW=4/);
    expect(() => selectedAirflowMajors("3.x")).toThrow(/majors among 2, 3/);
  });
});
