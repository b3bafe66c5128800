/**
 * `query-qmp-schema`: the QAPI schema of a monitor as QEMU's introspection
 * describes it (SchemaInfo), derived from the command table and the events,
 * so a client (completion in a shell, libvirt-style feature probes) sees
 * exactly the commands, arguments and types the monitor validates.
 *
 * As in QEMU, commands and events keep their names and every other type is
 * named by a number ("0", "1", ...; arrays "[N]"), which clients must not
 * rely on; integer builtins of every width are reported as `int`. Commands
 * named `x-...` carry the feature `unstable`, deprecated ones `deprecated`.
 * Discriminator values whose members denbd does not model have no variant.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CommandTable } from "./command.ts";
 * import { coreCommands } from "./core-commands.ts";
 * import { introspect } from "./introspection.ts";
 * const schema = introspect(new CommandTable<null>(coreCommands()), []);
 * const version = schema.find((entry) => entry.name === "query-version");
 * assert.equal(version?.["meta-type"], "command");
 * ```
 * @module
 */

import { commandFor, type CommandTable, type QmpCommand } from "./command.ts";
import type { JsonObject } from "./json-value.ts";
import {
  array,
  BUILTIN,
  type BuiltinName,
  EMPTY_STRUCT,
  enumeration,
  member,
  optional,
  type QapiEvent,
  type QapiType,
  struct,
  union,
} from "./schema.ts";

/** The JSON type QEMU's introspection gives each builtin, by the name it reports. */
const INTROSPECTED_BUILTIN: Readonly<Record<BuiltinName, readonly [string, string]>> = {
  str: ["str", "string"],
  bool: ["bool", "boolean"],
  int: ["int", "int"],
  int64: ["int", "int"],
  uint16: ["int", "int"],
  uint32: ["int", "int"],
  uint64: ["int", "int"],
  size: ["int", "int"],
  number: ["number", "number"],
  any: ["any", "value"],
  null: ["null", "null"],
};

/** Names types as introspection shows them and collects their SchemaInfo, each once. */
class SchemaWriter {
  /** The SchemaInfo of commands and events, in table order. */
  readonly entities: JsonObject[] = [];
  /** The SchemaInfo of every type they use, in order of first use. */
  readonly types: JsonObject[] = [];
  /**
   * Schema names of the types named so far, keyed by kind and QAPI name (a
   * forward reference is another object than the type it stands for).
   */
  readonly #names = new Map<string, string>();
  /** The schema names whose SchemaInfo is in {@linkcode types}. */
  readonly #defined = new Set<string>();
  #nextNumber = 0;

  /** The name `type` has in the schema, adding its SchemaInfo (and its parts') on first use. */
  nameOf(type: QapiType): string {
    if (type.kind === "builtin") return this.#builtin(type.name);
    if (type.kind === "array") return this.#array(this.nameOf(type.element));
    const key = `${type.kind} ${type.name}`;
    const known = this.#names.get(key);
    if (known !== undefined) return known;
    const name = String(this.#nextNumber++);
    this.#names.set(key, name); // before the members: a type may contain itself
    const info: JsonObject = { name };
    this.#define(info);
    switch (type.kind) {
      case "enum":
        Object.assign(info, {
          members: type.values.map((value) => ({ name: value })),
          "meta-type": "enum",
          values: [...type.values],
        });
        break;
      case "struct":
        Object.assign(info, { members: this.#members(type.members), "meta-type": "object" });
        break;
      case "union":
        Object.assign(info, {
          tag: type.discriminator,
          variants: Object.entries(type.branches).map(([value, branch]) => ({
            case: value,
            type: this.nameOf(branch),
          })),
          members: this.#members(type.base),
          "meta-type": "object",
        });
        break;
      case "alternate":
        Object.assign(info, {
          members: type.alternatives.map((alternative) => ({ type: this.nameOf(alternative) })),
          "meta-type": "alternate",
        });
        break;
    }
    return name;
  }

  #members(members: readonly { name: string; type: QapiType; optional: boolean }[]): JsonObject[] {
    return members.map((entry) => ({
      name: entry.name,
      ...(entry.optional ? { default: null } : {}),
      type: this.nameOf(entry.type),
    }));
  }

  #array(element: string): string {
    return this.#define({ name: `[${element}]`, "element-type": element, "meta-type": "array" });
  }

  #builtin(builtin: BuiltinName): string {
    const [name, jsonType] = INTROSPECTED_BUILTIN[builtin];
    return this.#define({ name, "json-type": jsonType, "meta-type": "builtin" });
  }

  /** Add `info` to the types unless one of its name is there already; returns its name. */
  #define(info: JsonObject): string {
    const name = info.name as string;
    if (!this.#defined.has(name)) {
      this.#defined.add(name);
      this.types.push(info);
    }
    return name;
  }
}

/** The features introspection lists for `command`. */
function featuresOf<S>(command: QmpCommand<S>): string[] {
  const features: string[] = [];
  if (command.deprecated) features.push("deprecated");
  if (command.name.startsWith("x-")) features.push("unstable");
  return features;
}

/**
 * The SchemaInfo list of a monitor offering `commands` and emitting
 * `events`: commands and events first, then every type they use.
 */
export function introspect<S>(
  commands: CommandTable<S>,
  events: readonly QapiEvent[],
): JsonObject[] {
  const writer = new SchemaWriter();
  const empty = writer.nameOf(EMPTY_STRUCT);
  for (const command of commands) {
    const features = featuresOf(command);
    writer.entities.push({
      name: command.name,
      "ret-type": command.returns ? writer.nameOf(command.returns) : empty,
      "meta-type": "command",
      "arg-type": writer.nameOf(command.args),
      ...(features.length ? { features } : {}),
    });
  }
  for (const event of events) {
    writer.entities.push({
      name: event.name,
      "meta-type": "event",
      "arg-type": writer.nameOf(event.data),
    });
  }
  return [...writer.entities, ...writer.types];
}

const { str } = BUILTIN;
const FEATURES = optional("features", array(str));

/** QEMU's SchemaInfo: what query-qmp-schema returns, one per entity and type. */
const SCHEMA_INFO = union(
  "SchemaInfo",
  [
    member("name", str),
    member(
      "meta-type",
      enumeration("SchemaMetaType", [
        "builtin",
        "enum",
        "array",
        "object",
        "alternate",
        "command",
        "event",
      ]),
    ),
    FEATURES,
  ],
  "meta-type",
  {
    builtin: struct("SchemaInfoBuiltin", [
      member(
        "json-type",
        enumeration("JSONType", [
          "string",
          "number",
          "int",
          "boolean",
          "null",
          "object",
          "array",
          "value",
        ]),
      ),
    ]),
    enum: struct("SchemaInfoEnum", [
      member("members", array(struct("SchemaInfoEnumMember", [member("name", str), FEATURES]))),
      optional("values", array(str)),
    ]),
    array: struct("SchemaInfoArray", [member("element-type", str)]),
    object: struct("SchemaInfoObject", [
      member(
        "members",
        array(
          struct("SchemaInfoObjectMember", [
            member("name", str),
            member("type", str),
            optional("default", BUILTIN.any),
            FEATURES,
          ]),
        ),
      ),
      optional("tag", str),
      optional(
        "variants",
        array(struct("SchemaInfoObjectVariant", [member("case", str), member("type", str)])),
      ),
    ]),
    alternate: struct("SchemaInfoAlternate", [
      member("members", array(struct("SchemaInfoAlternateMember", [member("type", str)]))),
    ]),
    command: struct("SchemaInfoCommand", [
      member("arg-type", str),
      member("ret-type", str),
      optional("allow-oob", BUILTIN.bool),
    ]),
    event: struct("SchemaInfoEvent", [member("arg-type", str)]),
  },
);

/** query-qmp-schema for a monitor that emits `events`; its commands are those of its table. */
export function queryQmpSchema<S>(events: readonly QapiEvent[]): QmpCommand<S> {
  return commandFor<S>()({
    name: "query-qmp-schema",
    args: EMPTY_STRUCT,
    returns: array(SCHEMA_INFO),
    run: (context) => introspect(context.commands, events),
  });
}
