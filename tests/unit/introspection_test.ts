import assert from "node:assert/strict";
import { commandFor, CommandTable } from "../../src/qmp/command.ts";
import { coreCommands } from "../../src/qmp/core-commands.ts";
import { introspect } from "../../src/qmp/introspection.ts";
import type { JsonObject } from "../../src/qmp/json-value.ts";
import {
  alternate,
  array,
  BUILTIN,
  enumeration,
  event,
  member,
  optional,
  type QapiStruct,
  struct,
  union,
} from "../../src/qmp/schema.ts";

const command = commandFor<null>();
const Kind = enumeration("Kind", ["file", "null", "other"]);
const Options = union("Options", [member("driver", Kind), optional("ro", BUILTIN.bool)], "driver", {
  file: struct("OptionsFile", [member("filename", BUILTIN.str), optional("size", BUILTIN.uint64)]),
  null: struct("OptionsNull", []),
}, ["other"]);
/** A struct that holds a list of itself. */
const Tree: QapiStruct = struct("Tree", [
  member("name", BUILTIN.str),
  optional(
    "children",
    array({
      kind: "struct",
      name: "Tree",
      get members() {
        return Tree.members;
      },
    } as QapiStruct),
  ),
]);
const TABLE = new CommandTable<null>([
  ...coreCommands<null>(),
  command({ name: "x-open", args: Options, returns: Tree, run: () => ({ name: "t" }) }),
  command({
    name: "old-thing",
    args: struct("old-thing-arg", [member("ref", alternate("Ref", [BUILTIN.str, BUILTIN.null]))]),
    deprecated: true,
    run: () => undefined,
  }),
]);
const EVENTS = [event("THING_DONE", struct("THING_DONE-arg", [member("id", BUILTIN.str)]))];

function byName(schema: JsonObject[]): Map<string, JsonObject> {
  return new Map(schema.map((entry) => [entry.name as string, entry]));
}

/** Every type name `entry` refers to. */
function references(entry: JsonObject): string[] {
  const names: string[] = [];
  for (const key of ["arg-type", "ret-type", "element-type"]) {
    if (typeof entry[key] === "string") names.push(entry[key] as string);
  }
  for (const part of [entry.members, entry.variants]) {
    if (!Array.isArray(part)) continue;
    for (const item of part as JsonObject[]) {
      if (typeof item.type === "string") names.push(item.type);
    }
  }
  return names;
}

Deno.test("introspection: every command and event once, every type named once and defined", () => {
  const schema = introspect(TABLE, EVENTS);
  const names = schema.map((entry) => entry.name as string);
  assert.equal(new Set(names).size, names.length, "no name twice");
  const known = byName(schema);
  for (const entry of schema) {
    for (const name of references(entry)) assert.ok(known.has(name), `${name} is defined`);
  }
  const commands = schema.filter((entry) => entry["meta-type"] === "command");
  assert.deepEqual(commands.map((entry) => entry.name), [...TABLE].map((entry) => entry.name));
  assert.deepEqual(
    schema.filter((entry) => entry["meta-type"] === "event").map((entry) => entry.name),
    ["THING_DONE"],
  );
});

Deno.test("introspection: types as QEMU shows them (masked names, int builtins, unions, features)", () => {
  const schema = introspect(TABLE, EVENTS);
  const known = byName(schema);
  const open = known.get("x-open")!;
  assert.deepEqual(open.features, ["unstable"]);
  assert.deepEqual(known.get("old-thing")!.features, ["deprecated"]);
  assert.equal(known.get("query-version")!.features, undefined);
  const options = known.get(open["arg-type"] as string)!;
  assert.match(options.name as string, /^\d+$/, "type names are masked");
  assert.equal(options["meta-type"], "object");
  assert.equal(options.tag, "driver");
  assert.deepEqual(
    (options.members as JsonObject[]).map((entry) => [entry.name, "default" in entry]),
    [["driver", false], ["ro", true]],
  );
  assert.deepEqual(
    (options.variants as JsonObject[]).map((entry) => entry.case),
    ["file", "null"],
    "an unmodelled value has no variant",
  );
  const kind = known.get((options.members as JsonObject[])[0].type as string)!;
  assert.deepEqual(kind.values, ["file", "null", "other"]);
  const file = known.get((options.variants as JsonObject[])[0].type as string)!;
  assert.deepEqual(file.members, [
    { name: "filename", type: "str" },
    { name: "size", default: null, type: "int" },
  ]);
  assert.deepEqual(known.get("int"), { name: "int", "json-type": "int", "meta-type": "builtin" });
  const ref = known.get(
    ((known.get(known.get("old-thing")!["arg-type"] as string)!.members) as JsonObject[])[0]
      .type as string,
  )!;
  assert.deepEqual(ref, {
    name: ref.name,
    members: [{ type: "str" }, { type: "null" }],
    "meta-type": "alternate",
  });
  const tree = known.get(open["ret-type"] as string)!;
  const children = known.get((tree.members as JsonObject[])[1].type as string)!;
  assert.deepEqual(children, {
    name: `[${tree.name}]`,
    "element-type": tree.name,
    "meta-type": "array",
  }, "a type that holds itself refers to its own name");
  assert.equal(known.get("quit")!["ret-type"], known.get("quit")!["arg-type"], "both q_empty");
});
