import { describe, expect, it } from "vitest";
import { DecodeError } from "../../../src/decode/errors.js";
import { SchemaError, TransientError, UserActionError } from "../../../src/errors.js";
import { modelError } from "../../../src/loop/thread.js";

const failure = (name: string, family: "user" | "transient" | "decode" | "other") =>
  modelError({ kind: "error", name, family, message: `${name} on the model thread`, stack: undefined });

describe("modelError: a failure of the model thread keeps what the supervisor decides by", () => {
  it("rebuilds a listed class as itself", () => {
    const e = failure("SchemaError", "user");
    expect(e).toBeInstanceOf(SchemaError);
    expect(e.message).toBe("SchemaError on the model thread");
  });

  it("rebuilds a class it does not list from its family, keeping the name", () => {
    // An operator's error (exit 2, not retried) must not come back as a plain Error (retried).
    const user = failure("CheckpointError", "user");
    expect(user).toBeInstanceOf(UserActionError);
    expect(user.name).toBe("CheckpointError");
    const transient = failure("SlotBusyError", "transient");
    expect(transient).toBeInstanceOf(TransientError);
    expect(transient).not.toBeInstanceOf(UserActionError);
    expect(failure("SomeDecodeError", "decode")).toBeInstanceOf(DecodeError);
    const other = failure("RangeError", "other");
    expect(other).not.toBeInstanceOf(UserActionError);
    expect(other).not.toBeInstanceOf(TransientError);
    expect(other.name).toBe("RangeError");
  });
});
