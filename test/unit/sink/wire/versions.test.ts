import { describe, expect, it } from "vitest";
import { UserActionError } from "../../../../src/errors.js";
import { API, pickVersions } from "../../../../src/sink/wire/connection.js";

/** The versions the wire producer picks from a broker's ApiVersions ranges: non-flexible ones only. */
const ranges = (produce: [number, number] | null, metadata: [number, number] | null, init: [number, number] | null) => {
  const m = new Map<number, readonly [number, number]>();
  if (produce) m.set(API.Produce, produce);
  if (metadata) m.set(API.Metadata, metadata);
  if (init) m.set(API.InitProducerId, init);
  return m;
};

describe("pickVersions", () => {
  it("takes the highest non-flexible version both sides speak", () => {
    // Kafka 4.x: Produce 3-12, Metadata 0-13, InitProducerId 0-5.
    expect(pickVersions(ranges([3, 12], [0, 13], [0, 5]), "b:9092")).toEqual({ Produce: 8, Metadata: 8, InitProducerId: 1 });
    // An old broker (2.0-ish): Produce 0-6, Metadata 0-6, InitProducerId 0-1.
    expect(pickVersions(ranges([0, 6], [0, 6], [0, 1]), "b:9092")).toEqual({ Produce: 6, Metadata: 6, InitProducerId: 1 });
    expect(pickVersions(ranges([3, 3], [4, 4], [0, 0]), "b:9092")).toEqual({ Produce: 3, Metadata: 4, InitProducerId: 0 });
  });

  it("names the API and the versions when there is none in common", () => {
    expect(() => pickVersions(ranges([9, 12], [0, 13], [0, 5]), "kafka-1:9092")).toThrow(
      /Kafka broker kafka-1:9092 offers Produce versions 9-12; the wire producer needs one of 3-8/,
    );
    expect(() => pickVersions(ranges([3, 12], [0, 3], [0, 5]), "b:1")).toThrow(/Metadata versions 0-3/);
    expect(() => pickVersions(ranges([3, 12], [0, 13], null), "b:1")).toThrow(/InitProducerId versions none/);
    expect(() => pickVersions(ranges([0, 2], [0, 13], [0, 5]), "b:1")).toThrow(UserActionError);
  });
});
