/**
 * A server's QMP schema as `query-qmp-schema` returns it (QEMU's
 * SchemaInfo list), read for a shell: the command names, the argument
 * members under a dotted key path (for completion), and a summary of a
 * command's arguments in the shell's `KEY=VALUE` syntax (for `help`).
 *
 * QEMU masks type names in introspection (`"arg-type": "29"`): a type is
 * only ever reached through the entry of that name, so the masked names
 * never show. A union's branch members (`variants`) belong to the branch
 * whose tag value is given among the arguments, or to any branch while the
 * tag is not given.
 *
 * A server without `query-qmp-schema` (QEMU and denbd have it; another
 * QMP server may not) gives command names and nothing about arguments:
 * {@linkcode QmpIntrospection.fromCommandNames}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { QmpIntrospection } from "./introspected-schema.ts";
 * const schema = QmpIntrospection.fromSchemaInfo([
 *   { name: "stop-it", "meta-type": "command", "arg-type": "1", "ret-type": "0" },
 *   { name: "0", "meta-type": "object", members: [] },
 *   { name: "1", "meta-type": "object", members: [
 *     { name: "id", type: "str" },
 *     { name: "force", type: "bool", default: null },
 *   ] },
 *   { name: "str", "meta-type": "builtin", "json-type": "string" },
 *   { name: "bool", "meta-type": "builtin", "json-type": "boolean" },
 * ]);
 * assert.deepEqual(schema.commandNames(), ["stop-it"]);
 * assert.deepEqual(schema.members("stop-it", [], {})?.map((m) => m.name), ["id", "force"]);
 * assert.deepEqual(schema.commandHelp("stop-it"), [
 *   "stop-it id=<str> [force=true|false]",
 *   "  returns {}",
 * ]);
 * ```
 * @module
 */

import { isJsonObject, type JsonObject, type JsonValue } from "./json-value.ts";

/** One member of an object type, as a shell sees it. */
export interface IntrospectedMember {
  /** The member's name, e.g. "node-name". */
  readonly name: string;
  /** It may be left out. */
  readonly optional: boolean;
  /** What a value of it is written as: an object (dotted keys go into it), or a value. */
  readonly holds: "object" | "value";
  /** The values it takes when they are few and named: an enum's values, or true and false. */
  readonly choices: readonly string[];
}

/** One schema entry (QEMU's SchemaInfo); fields read as needed. */
type Entry = JsonObject;

/** The object a key path leads to: its members and, for a union, its tag and branches. */
interface ObjectEntry {
  readonly members: readonly JsonObject[];
  readonly tag?: string;
  readonly variants: readonly JsonObject[];
}

/** The help of one command being built: its first line's words, the nested lines. */
interface HelpLines {
  /** The command and its top-level keys. */
  readonly top: string[];
  /** Keys inside nested objects and union branches, one per line. */
  readonly nested: string[];
  /** Object types being expanded (a recursive type is shown as a value inside itself). */
  readonly expanding: Set<string>;
}

/** Commands, and their arguments when the schema is known. */
export class QmpIntrospection {
  readonly #entries: ReadonlyMap<string, Entry>;
  readonly #commands: readonly string[];

  private constructor(entries: ReadonlyMap<string, Entry>, commands: readonly string[]) {
    this.#entries = entries;
    this.#commands = [...commands].sort();
  }

  /** From the return value of `query-qmp-schema`. */
  static fromSchemaInfo(info: JsonValue): QmpIntrospection {
    const entries = new Map<string, Entry>();
    for (const entry of Array.isArray(info) ? info : []) {
      if (isJsonObject(entry) && typeof entry.name === "string") entries.set(entry.name, entry);
    }
    const commands = [...entries.values()]
      .filter((entry) => entry["meta-type"] === "command")
      .map((entry) => entry.name as string);
    return new QmpIntrospection(entries, commands);
  }

  /** From command names alone (`query-commands`): nothing is known of arguments. */
  static fromCommandNames(names: readonly string[]): QmpIntrospection {
    return new QmpIntrospection(new Map(), names);
  }

  /** Whether arguments are known (the schema came from `query-qmp-schema`). */
  get knowsArguments(): boolean {
    return this.#entries.size > 0;
  }

  /** The command names, sorted. */
  commandNames(): readonly string[] {
    return this.#commands;
  }

  /**
   * The members of the object at `path` (keys from the top, e.g.
   * `["addr", "data"]`) in the arguments of `command`, given the arguments
   * `args` written so far (which pick union branches); null if `command`
   * or the path is unknown or leads to no object.
   */
  members(command: string, path: readonly string[], args: JsonObject): IntrospectedMember[] | null {
    const commandEntry = this.#entries.get(command);
    if (commandEntry?.["meta-type"] !== "command") return null;
    const start = this.#objectOf(String(commandEntry["arg-type"]));
    // While a union's tag is not given, a key may lead into several branches' objects.
    let objects = start ? [start] : [];
    let given: JsonValue | undefined = args;
    for (const key of path) {
      objects = objects.flatMap((object) =>
        this.#membersOf(object, given)
          .filter((m) => m.name === key)
          .map((m) => this.#objectOf(String(m.type)))
          .filter((found) => found !== null)
      );
      given = isJsonObject(given) ? given[key] : undefined;
    }
    if (objects.length === 0) return null;
    const members = objects.flatMap((object) => this.#membersOf(object, given));
    return unique(members).map((m) => this.#describe(m));
  }

  /**
   * The arguments of `command` in the shell's syntax: a first line with the
   * required and the optional (bracketed) keys of its top level, then one
   * line per member of each nested object and union branch (`if TAG=VALUE`
   * says which branch), then what it returns. Null for an unknown command.
   */
  commandHelp(command: string): string[] | null {
    const entry = this.#entries.get(command);
    if (entry?.["meta-type"] !== "command") return null;
    const help: HelpLines = { top: [command], nested: [], expanding: new Set() };
    this.#helpObject(help, String(entry["arg-type"]), "", false, []);
    return [
      help.top.join(" "),
      ...help.nested,
      `  returns ${this.#placeholder(String(entry["ret-type"]))}`,
    ];
  }

  /** Add the members of the object `typeName` under `prefix` to `help`. */
  #helpObject(
    help: HelpLines,
    typeName: string,
    prefix: string,
    optional: boolean,
    when: readonly string[],
  ): void {
    help.expanding.add(typeName);
    const object = this.#objectOf(typeName)!;
    for (const member of object.members) {
      const key = prefix + String(member.name);
      const memberType = String(member.type);
      const isOptional = optional || "default" in member;
      const entry = this.#entries.get(memberType);
      const expands = entry?.["meta-type"] === "object" && !help.expanding.has(memberType) &&
        ((entry.members as JsonValue[]).length > 0 || Array.isArray(entry.variants));
      if (expands) {
        this.#helpObject(help, memberType, `${key}.`, isOptional, when);
        continue;
      }
      const text = `${key}=${this.#placeholder(memberType)}`;
      const shown = isOptional ? `[${text}]` : text;
      if (when.length === 0 && !prefix) help.top.push(shown);
      else help.nested.push(`  ${shown}${when.length ? `  if ${when.join(", ")}` : ""}`);
    }
    for (const variant of object.variants) {
      const condition = `${prefix}${object.tag}=${variant.case}`;
      this.#helpObject(help, String(variant.type), prefix, optional, [...when, condition]);
    }
    help.expanding.delete(typeName);
  }

  /** How a value of `typeName` is written, e.g. `<str>`, `true|false`, `a|b`, `[<str>,...]`. */
  #placeholder(typeName: string): string {
    const entry = this.#entries.get(typeName);
    switch (entry?.["meta-type"]) {
      case "builtin":
        if (typeName === "null") return "null";
        return typeName === "bool" ? "true|false" : `<${typeName}>`;
      case "enum":
        return (entry.values as string[]).join("|");
      case "array":
        return `[${this.#placeholder(String(entry["element-type"]))},...]`;
      case "alternate":
        return (entry.members as JsonObject[])
          .map((alternative) => this.#placeholder(String(alternative.type)))
          .join("|");
      case "object":
        return (entry.members as JsonValue[]).length || entry.variants ? "{...}" : "{}";
      default:
        return `<${typeName}>`;
    }
  }

  /** The object of `typeName`, or of the object alternative of an alternate; null for others. */
  #objectOf(typeName: string): ObjectEntry | null {
    const entry = this.#entries.get(typeName);
    if (entry?.["meta-type"] === "alternate") {
      const object = (entry.members as JsonObject[])
        .map((alternative) => this.#entries.get(String(alternative.type)))
        .find((alternative) => alternative?.["meta-type"] === "object");
      return object ? this.#objectOf(String(object.name)) : null;
    }
    if (entry?.["meta-type"] !== "object") return null;
    return {
      members: entry.members as JsonObject[],
      tag: typeof entry.tag === "string" ? entry.tag : undefined,
      variants: Array.isArray(entry.variants) ? entry.variants as JsonObject[] : [],
    };
  }

  /**
   * The members of `object` with those of the union branch `given` picks by
   * its tag (or of every branch while the tag is not given).
   */
  #membersOf(object: ObjectEntry, given: JsonValue | undefined): JsonObject[] {
    const tagValue = object.tag && isJsonObject(given) ? given[object.tag] : undefined;
    const branches = object.variants.filter((variant) =>
      tagValue === undefined || variant.case === tagValue
    );
    return [
      ...object.members,
      ...branches.flatMap((branch) => this.#objectOf(String(branch.type))?.members ?? []),
    ];
  }

  #describe(member: JsonObject): IntrospectedMember {
    const typeName = String(member.type);
    const entry = this.#entries.get(typeName);
    const choices = typeName === "bool"
      ? ["true", "false"]
      : entry?.["meta-type"] === "enum"
      ? entry.values as string[]
      : [];
    return {
      name: String(member.name),
      optional: "default" in member,
      holds: entry?.["meta-type"] === "object" ? "object" : "value",
      choices,
    };
  }
}

/** `members` with each name once (the first of each name). */
function unique(members: readonly JsonObject[]): JsonObject[] {
  return members.filter((m, index) =>
    members.findIndex((other) => other.name === m.name) === index
  );
}
