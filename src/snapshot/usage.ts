/** `snapshot`'s usage, apart from command.ts so that the command line's help does not load the snapshot command (kept out of `run`'s memory). */
export const SNAPSHOT_USAGE = `  airflow-eventstream snapshot [--dag ID ...] [--runs-since DATE] [--active-only] [--table task_instance|dag_run] [--wait]
                                        ask the daemon streaming from this database to publish the
                                        current rows as op "snapshot" events (docs/backfill.md);
                                        prints the job id; --wait follows it until done`;
