/**
 * Which Airflow majors the real-Airflow tier runs: EVENTSTREAM_TEST_AIRFLOW, a comma-separated list
 * ("3", "2,3"), default all. CI runs Airflow 2.x against PostgreSQL 15 and 3.x against 18, so each
 * version of Airflow is tested once per CI run without doubling the tier's ~4-6 minutes.
 * No imports: vitest.config.ts reads it too (it leaves test/airflow/serve.test.ts, Airflow 3 only,
 * out of a run without 3).
 */
export const ALL_AIRFLOW_MAJORS = ["2", "3"] as const;

export function selectedAirflowMajors(value: string | undefined): ("2" | "3")[] {
  if (value === undefined || value.trim() === "") return [...ALL_AIRFLOW_MAJORS];
  const picked = value.split(",").map((s) => s.trim());
  const unknown = picked.filter((m) => !(ALL_AIRFLOW_MAJORS as readonly string[]).includes(m));
  if (unknown.length > 0 || picked.length === 0) {
    throw new Error(
      `EVENTSTREAM_TEST_AIRFLOW=${value}: expected a comma-separated list of Airflow majors among ${ALL_AIRFLOW_MAJORS.join(", ")}`,
    );
  }
  return ALL_AIRFLOW_MAJORS.filter((m) => picked.includes(m));
}
