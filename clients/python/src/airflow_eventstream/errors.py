"""The package's one error family: catch EventStreamError for all of them."""


class EventStreamError(Exception):
    """Something the caller must act on: a bad argument, a record that is not an event, a missing topic."""


class RetentionError(EventStreamError):
    """A point to start from is older than Kafka still holds: its retention deleted events after it."""


class KafkaUnavailable(EventStreamError):
    """Kafka did not answer in time."""
