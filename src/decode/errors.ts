/**
 * Errors raised by decode/. None of them is something an operator can fix by changing settings:
 * each means the bytes or the message sequence are not what protocol version 1 of pgoutput
 * produces, i.e. a bug here or a protocol mismatch. They are fatal for the stream: the caller stops
 * and restarts from the last acknowledged position rather than skipping anything.
 */

/** The bytes of one pgoutput message could not be decoded. */
export class DecodeError extends Error {
  override name = "DecodeError";
}

/**
 * The messages decoded fine but arrived in an order pgoutput never produces (a change outside a
 * transaction, a change for a relation never described, a commit not matching its begin).
 */
export class FramingError extends DecodeError {
  override name = "FramingError";
}
