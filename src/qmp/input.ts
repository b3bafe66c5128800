/**
 * Validation of input against a QAPI type, with QEMU 7.2's error messages,
 * returning the typed value. Two modes, like QEMU's two input visitors:
 *
 * - "json": QMP arguments (or a JSON command-line option). Integers must be
 *   JSON integers (`bigint`s, see json-value.ts), booleans JSON booleans.
 *   Unsigned types also take negative 64-bit integers and wrap them, as
 *   QEMU does (-1 is 2^64-1, so "expects uint32_t").
 * - "keyval": command-line options (`a.b=1,c.0=x`, parsed into objects,
 *   arrays and strings). Every leaf is a string converted per the expected
 *   type: on/yes/true/y and off/no/false/n for booleans, C integer syntax
 *   (0x hex, 0 octal) for integers, `1.5G`-style sizes for `size`.
 *
 * The result has the input's shape with wire names (`{"node-name": ...}`):
 * structs and unions become objects holding the members present, integers
 * become `number`s, `any` values are passed through; its TypeScript type is
 * `QapiValue` of the schema type. Errors are DenbdErrors
 * of kind "invalid" (QMP class GenericError) naming the offending member by
 * its path (`addr.data.host`, `bitmaps[1].node` in json mode,
 * `bitmaps.1.node` in keyval mode), except where QEMU names it bare: enum
 * values, integer ranges and alternates (`null` for a list element). Of
 * several unexpected members, the one QEMU's hash table yields first is
 * named (see ghash-order.ts).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { validateInput } from "./input.ts";
 * import { BUILTIN, optional, struct } from "./schema.ts";
 * const Args = struct("Args", [optional("max-connections", BUILTIN.uint32)]);
 * assert.deepEqual(validateInput(Args, { "max-connections": "10" }, "keyval"), {
 *   "max-connections": 10,
 * });
 * assert.throws(
 *   () => validateInput(Args, { "max-connections": 1.5 }),
 *   /Parameter 'max-connections' expects uint64/,
 * );
 * ```
 * @module
 */

import { DenbdError } from "../errors.ts";
import { parseCDouble, parseCInteger, parseSize } from "./c-number.ts";
import { firstRemaining } from "./ghash-order.ts";
import { isJsonObject, type JsonValue, qdictKeys } from "./json-value.ts";
import type {
  QapiAlternate,
  QapiArray,
  QapiBuiltin,
  QapiEnum,
  QapiMember,
  QapiStruct,
  QapiType,
  QapiUnion,
  QapiValue,
} from "./schema.ts";

/** Where the input comes from: QMP/JSON, or a keyval command-line option. */
export type InputMode = "json" | "keyval";

/**
 * Check `value` against `type` and return the typed value (its type derived
 * from the schema type); throws a DenbdError ("invalid") with QEMU's
 * message on the first problem found, in QEMU's visiting order (members in
 * schema order, a union's base before its branch, unexpected members last).
 */
export function validateInput<T extends QapiType>(
  type: T,
  value: JsonValue,
  mode?: InputMode,
): QapiValue<T>;
export function validateInput(
  type: QapiType,
  value: JsonValue,
  mode: InputMode = "json",
): unknown {
  return new InputVisitor(mode).visit(type, null, value);
}

/** An object or list being visited, for naming what is inside it. */
interface Container {
  /** Its own name in its parent (null for list elements and the root). */
  readonly name: string | null;
  /** Whether it is a list (else an object). */
  readonly list: boolean;
  /** Index of the list element being visited. */
  index: number;
}

/** Largest value and C type name of the bounded unsigned builtins. */
const UNSIGNED_LIMITS: Partial<Record<QapiBuiltin["name"], [bigint, string]>> = {
  uint16: [0xffffn, "uint16_t"],
  uint32: [0xffff_ffffn, "uint32_t"],
};

const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;
const TWO_64 = 1n << 64n;

const KEYVAL_TRUE = ["on", "yes", "true", "y"];
const KEYVAL_FALSE = ["off", "no", "false", "n"];

/** Walks a value along a type, keeping the stack of containers for messages. */
class InputVisitor {
  readonly #mode: InputMode;
  readonly #stack: Container[] = [];

  constructor(mode: InputMode) {
    this.#mode = mode;
  }

  /** Visit `value` (undefined: absent) named `name` in the current container. */
  visit(type: QapiType, name: string | null, value: JsonValue | undefined): unknown {
    switch (type.kind) {
      case "builtin":
        return this.#builtin(type, name, value);
      case "enum":
        return this.#enum(type, name, value);
      case "struct":
      case "union":
        return this.#object(type, name, value);
      case "array":
        return this.#array(type, name, value);
      case "alternate":
        return this.#alternate(type, name, value);
    }
  }

  /** The path of `name` in the current container, as QEMU spells it in messages. */
  #fullName(name: string | null): string {
    let path = "";
    let current = name;
    for (let i = this.#stack.length - 1; i >= 0; i--) {
      const container = this.#stack[i];
      if (container.list) {
        path = (this.#mode === "json" ? `[${container.index}]` : `.${container.index}`) + path;
      } else {
        path = `.${current ?? "<anonymous>"}${path}`;
      }
      current = container.name;
    }
    if (current !== null) return current + path;
    if (path.startsWith(".")) return path.slice(1);
    return path || "<anonymous>";
  }

  #present(name: string | null, value: JsonValue | undefined): JsonValue {
    if (value === undefined) fail(`Parameter '${this.#fullName(name)}' is missing`);
    return value;
  }

  #typeError(name: string | null, expected: string): never {
    fail(`Invalid parameter type for '${this.#fullName(name)}', expected: ${expected}`);
  }

  #object(
    type: QapiStruct | QapiUnion,
    name: string | null,
    value: JsonValue | undefined,
  ): Record<string, unknown> {
    const input = this.#present(name, value);
    if (!isJsonObject(input)) this.#typeError(name, "object");
    this.#stack.push({ name, list: false, index: 0 });
    const visited: string[] = [];
    const result: Record<string, unknown> = {};
    const visitMembers = (members: readonly QapiMember[]) => {
      for (const member of members) {
        const present = Object.hasOwn(input, member.name);
        if (member.optional && !present) continue;
        if (present) visited.push(member.name);
        result[member.name] = this.visit(
          member.type,
          member.name,
          present ? input[member.name] : undefined,
        );
      }
    };
    if (type.kind === "struct") {
      visitMembers(type.members);
    } else {
      visitMembers(type.base);
      const tag = result[type.discriminator] as string;
      if (type.unmodelled.includes(tag)) {
        for (const key of Object.keys(input).filter((key) => !visited.includes(key))) {
          visited.push(key);
          result[key] = input[key];
        }
      } else if (Object.hasOwn(type.branches, tag)) {
        visitMembers(type.branches[tag].members);
      }
    }
    const unexpected = firstRemaining(qdictKeys(input), visited);
    if (unexpected !== undefined) fail(`Parameter '${this.#fullName(unexpected)}' is unexpected`);
    this.#stack.pop();
    return result;
  }

  #array(type: QapiArray, name: string | null, value: JsonValue | undefined): unknown[] {
    const input = this.#present(name, value);
    if (!Array.isArray(input)) this.#typeError(name, "array");
    const container: Container = { name, list: true, index: 0 };
    this.#stack.push(container);
    const result = input.map((element, index) => {
      container.index = index;
      return this.visit(type.element, null, element);
    });
    this.#stack.pop();
    return result;
  }

  #alternate(type: QapiAlternate, name: string | null, value: JsonValue | undefined): unknown {
    const input = this.#present(name, value);
    const branch = type.alternatives.find((alternative) => accepts(alternative, input));
    if (!branch) fail(`Invalid parameter type for '${name ?? "null"}', expected: ${type.name}`);
    return this.visit(branch, name, input);
  }

  #enum(type: QapiEnum, name: string | null, value: JsonValue | undefined): string {
    const text = this.#string(name, value);
    if (!type.values.includes(text)) {
      fail(`Parameter '${name ?? "null"}' does not accept value '${text}'`);
    }
    return text;
  }

  #string(name: string | null, value: JsonValue | undefined): string {
    if (this.#mode === "keyval") return this.#keyvalScalar(name, value);
    const input = this.#present(name, value);
    if (typeof input !== "string") this.#typeError(name, "string");
    return input;
  }

  /** The string a keyval leaf holds; objects and lists here are unexpected members. */
  #keyvalScalar(name: string | null, value: JsonValue | undefined): string {
    const input = this.#present(name, value);
    if (typeof input === "string") return input;
    if (typeof input === "object" && input !== null) {
      fail(`Parameters '${this.#fullName(name)}.*' are unexpected`);
    }
    fail(`Internal error: parameter ${this.#fullName(name)} invalid`);
  }

  #builtin(type: QapiBuiltin, name: string | null, value: JsonValue | undefined): unknown {
    switch (type.name) {
      case "any":
        return this.#present(name, value);
      case "null":
        if (this.#present(name, value) !== null) this.#typeError(name, "null");
        return null;
      case "str":
        return this.#string(name, value);
      case "bool":
        return this.#bool(name, value);
      case "number":
        return this.#number(name, value);
      case "int":
      case "int64":
        return Number(this.#int64(name, value));
      case "size":
        return Number(this.#uint64(name, value, "size"));
      default: {
        const number = this.#uint64(name, value, "integer");
        const limit = UNSIGNED_LIMITS[type.name];
        if (limit && number > limit[0]) fail(`Parameter '${name ?? "null"}' expects ${limit[1]}`);
        return Number(number);
      }
    }
  }

  #bool(name: string | null, value: JsonValue | undefined): boolean {
    if (this.#mode === "keyval") {
      const text = this.#keyvalScalar(name, value);
      if (KEYVAL_TRUE.includes(text)) return true;
      if (KEYVAL_FALSE.includes(text)) return false;
      fail(`Parameter '${this.#fullName(name)}' expects 'on' or 'off'`);
    }
    const input = this.#present(name, value);
    if (typeof input !== "boolean") this.#typeError(name, "boolean");
    return input;
  }

  #number(name: string | null, value: JsonValue | undefined): number {
    if (this.#mode === "keyval") {
      const number = parseCDouble(this.#keyvalScalar(name, value));
      if (number === null) this.#typeError(name, "number");
      return number;
    }
    const input = this.#present(name, value);
    if (typeof input === "number") return input;
    if (typeof input === "bigint") return Number(input);
    this.#typeError(name, "number");
  }

  #int64(name: string | null, value: JsonValue | undefined): bigint {
    if (this.#mode === "keyval") {
      const number = parseCInteger(this.#keyvalScalar(name, value), "signed");
      if (typeof number !== "bigint") fail(`Parameter '${this.#fullName(name)}' expects integer`);
      return number;
    }
    const input = this.#present(name, value);
    if (typeof input !== "bigint" || input < INT64_MIN || input > INT64_MAX) {
      this.#typeError(name, "integer");
    }
    return input;
  }

  /** A uint64 (or size): keyval `syntax` decides the parser and the message. */
  #uint64(name: string | null, value: JsonValue | undefined, syntax: "integer" | "size"): bigint {
    if (this.#mode === "keyval") {
      const text = this.#keyvalScalar(name, value);
      const number = syntax === "size" ? parseSize(text) : parseCInteger(text, "unsigned");
      if (typeof number !== "bigint") fail(`Parameter '${this.#fullName(name)}' expects ${syntax}`);
      return number;
    }
    const input = this.#present(name, value);
    if (typeof input !== "bigint" || input < INT64_MIN || input >= TWO_64) {
      fail(`Parameter '${this.#fullName(name)}' expects uint64`);
    }
    return input < 0n ? input + TWO_64 : input;
  }
}

/** Whether an alternate picks `alternative` for `value`, by the value's JSON type. */
function accepts(alternative: QapiType, value: JsonValue): boolean {
  if (value === null) return alternative.kind === "builtin" && alternative.name === "null";
  switch (typeof value) {
    case "string":
      return alternative.kind === "enum" ||
        (alternative.kind === "builtin" && alternative.name === "str");
    case "boolean":
      return alternative.kind === "builtin" && alternative.name === "bool";
    case "number":
    case "bigint":
      return alternative.kind === "builtin" &&
        !["str", "bool", "any", "null"].includes(alternative.name);
  }
  if (Array.isArray(value)) return alternative.kind === "array";
  return isJsonObject(value) && (alternative.kind === "struct" || alternative.kind === "union");
}

function fail(message: string): never {
  throw new DenbdError("invalid", message);
}
