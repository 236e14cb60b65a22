/** `replay`'s usage, apart from replay.ts so that the command line's help does not load the replay code (kept out of `run`'s memory). */
export const REPLAY_USAGE = `airflow-eventstream replay --from <position|LSN|time> [--until <position|LSN|time>] [--dag ID ...] (--to-topic NAME | --stdout)
                                        copy the events of [from, until) (until: the topics' end now),
                                        per DAG in their original order, key, value and headers as
                                        they are, to a topic (created if missing; transactional when
                                        EVENTSTREAM_DELIVERY=exactly-once) or to stdout as JSON lines.
                                        position: an event's source.position; LSN: "16/B374D848";
                                        time: ISO-8601 with its zone, compared with source.commit_time`;
