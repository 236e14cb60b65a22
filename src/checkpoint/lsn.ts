/**
 * Re-exported for src/sink/kafka.ts until it imports ../lsn.js: LSN arithmetic lives in src/lsn.ts,
 * beside the Lsn type, so that decode/, airflow/ and source/ need not import checkpoint/ for it.
 */
export { formatLsn, lsnHex16, maxLsn, parseLsn } from "../lsn.js";
