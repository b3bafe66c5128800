/**
 * The TypeScript types derived from the QAPI schema. Each value below is
 * checked twice: by the type checker against the type derived from its
 * schema (every `@ts-expect-error` fails the check if the error it expects
 * goes away) and, sent as QMP would send it, by the input visitor against
 * the schema itself, so the two must agree. Commands receive arguments
 * typed from their schema, and events are emitted with data typed from
 * theirs.
 */

import assert from "node:assert/strict";
import {
  BLOCK_EXPORT_DELETED,
  BlockdevOptions,
  type BlockdevOptionsValue,
  BlockExportOptions,
  type BlockExportOptionsValue,
  type DaemonEvent,
  ObjectOptions,
  type ObjectOptionsValue,
} from "../../src/daemon/qapi-types.ts";
import { flattenLegacyAddress } from "../../src/daemon/qmp-commands.ts";
import { commandFor, CommandTable, runCommand } from "../../src/qmp/command.ts";
import { EventBus, type QmpEvent } from "../../src/qmp/events.ts";
import { validateInput } from "../../src/qmp/input.ts";
import { JsonStreamParser } from "../../src/qmp/json-stream.ts";
import { formatJson, type JsonObject, type JsonValue } from "../../src/qmp/json-value.ts";
import { BUILTIN, enumeration, event, member, optional, struct } from "../../src/qmp/schema.ts";

/** `value` as a QMP peer would send it: JSON text parsed again (integers become bigints). */
function wire(value: unknown): JsonValue {
  const [item] = new JsonStreamParser().feed(new TextEncoder().encode(formatJson(value) + "\n"));
  assert.ok(item && "value" in item);
  return item.value;
}

/** The input visitor takes `value` and gives it back unchanged. */
function accepted(value: BlockdevOptionsValue): void {
  assert.deepEqual(validateInput(BlockdevOptions, wire(value)), value);
}

/** The input visitor refuses `value` with `message`. */
function refused(value: BlockdevOptionsValue, message: string): void {
  assert.throws(() => validateInput(BlockdevOptions, wire(value)), { message });
}

Deno.test("BlockdevOptions: the derived type takes what the schema takes, recursively", () => {
  accepted({ driver: "file", "node-name": "f0", filename: "/x", locking: "off" });
  accepted({
    driver: "raw",
    "node-name": "r0",
    offset: 512,
    file: { driver: "raw", file: { driver: "file", filename: "/x", cache: { direct: true } } },
  });
  accepted({ driver: "raw", file: "f0" });
  // A driver denbd does not model takes any members (the daemon refuses the driver).
  accepted({ driver: "qcow2", "node-name": "q0", file: "f0", backing: null });
});

Deno.test("BlockdevOptions: what the derived type refuses, the schema refuses", () => {
  // @ts-expect-error filename is required
  refused({ driver: "file", "node-name": "f0" }, "Parameter 'filename' is missing");
  refused(
    // @ts-expect-error not a BlockdevDiscardOptions value
    { driver: "file", filename: "/x", discard: "maybe" },
    "Parameter 'discard' does not accept value 'maybe'",
  );
  refused(
    // @ts-expect-error a file has no offset
    { driver: "file", filename: "/x", offset: 1 },
    "Parameter 'offset' is unexpected",
  );
  refused(
    // @ts-expect-error not a BlockdevRef
    { driver: "raw", file: 1 },
    "Invalid parameter type for 'file', expected: BlockdevRef",
  );
  refused(
    // @ts-expect-error the inline node's filename, two levels down, is not a string
    { driver: "raw", file: { driver: "raw", file: { driver: "file", filename: 1 } } },
    "Invalid parameter type for 'file.file.filename', expected: string",
  );
});

Deno.test("union values narrow on their discriminator", () => {
  const describe = (options: BlockdevOptionsValue): string => {
    switch (options.driver) {
      case "file":
        return options.filename;
      case "raw":
        return typeof options.file === "string" ? options.file : `(${describe(options.file)})`;
      default:
        return options.driver;
    }
  };
  const options = validateInput(
    BlockdevOptions,
    wire({ driver: "raw", file: { driver: "raw", file: { driver: "file", filename: "/x" } } }),
  );
  assert.equal(describe(options), "((/x))");
  const exported: BlockExportOptionsValue = validateInput(
    BlockExportOptions,
    wire({ type: "nbd", id: "e0", "node-name": "f0", bitmaps: ["b0", { node: "f0", name: "b1" }] }),
  );
  assert.ok(exported.type === "nbd");
  assert.deepEqual(exported.bitmaps?.map((ref) => typeof ref === "string" ? ref : ref.name), [
    "b0",
    "b1",
  ]);
  const object: ObjectOptionsValue = validateInput(
    ObjectOptions,
    wire({ "qom-type": "iothread", id: "io0", "poll-max-ns": 5 }),
  );
  assert.ok(object["qom-type"] === "iothread");
  assert.equal(object["poll-max-ns"], 5);
  assert.deepEqual(
    flattenLegacyAddress({ type: "unix", data: { path: "/s" } }),
    { type: "unix", path: "/s" },
  );
});

Deno.test("a command's arguments are typed from its schema", async () => {
  const command = commandFor<null>();
  const Mode = enumeration("Mode", ["safe", "hard"]);
  const remove = command({
    name: "x-remove",
    args: struct("x-remove-arg", [member("id", BUILTIN.str), optional("mode", Mode)]),
    run: (_context, args) => {
      const mode: "safe" | "hard" = args.mode ?? "safe";
      // @ts-expect-error id is a string
      const id: number = args.id;
      return `${id} ${mode}`;
    },
  });
  const context = {
    state: null,
    commands: new CommandTable<null>([remove]),
    session: { negotiated: true, completeNegotiation: () => {} },
    requestQuit: () => {},
  };
  const args: JsonObject = { id: "e0", mode: "hard" };
  assert.equal(await runCommand(remove, context, args), "e0 hard");
  await assert.rejects(runCommand(remove, context, { id: "e0", mode: "soft" }), {
    message: "Parameter 'mode' does not accept value 'soft'",
  });
});

Deno.test("events are emitted with data of their schema", () => {
  const bus = new EventBus<DaemonEvent>();
  const seen: QmpEvent[] = [];
  const unsubscribe = bus.subscribe((event) => seen.push(event));
  bus.emit(BLOCK_EXPORT_DELETED, { id: "e0" });
  // @ts-expect-error the id is a string
  bus.emit(BLOCK_EXPORT_DELETED, { id: 1 });
  const undeclared = event("X_UNDECLARED", BLOCK_EXPORT_DELETED.data);
  // @ts-expect-error not one of the daemon's events
  bus.emit(undeclared, { id: "e0" });
  unsubscribe();
  assert.deepEqual(seen.map((event) => [event.name, event.data]), [
    ["BLOCK_EXPORT_DELETED", { id: "e0" }],
    ["BLOCK_EXPORT_DELETED", { id: 1 }],
    ["X_UNDECLARED", { id: "e0" }],
  ]);
  // What the type checker refused, the event's schema refuses too.
  assert.deepEqual(validateInput(BLOCK_EXPORT_DELETED.data, wire(seen[0].data)), { id: "e0" });
  assert.throws(() => validateInput(BLOCK_EXPORT_DELETED.data, wire(seen[1].data)), {
    message: "Invalid parameter type for 'id', expected: string",
  });
});
