/**
 * The type system of denbd's QMP interface, modelled on QEMU's QAPI: named
 * builtins, enums, structs, flat unions with a discriminator, alternates and
 * arrays. Commands, their arguments and replies, events and the daemon's
 * command-line options are all described with these values, and everything
 * else (input validation with QEMU's error messages, `query-commands`,
 * `--help`) is derived from the descriptions.
 *
 * @example
 * ```ts
 * import { BUILTIN, member, struct } from "./schema.ts";
 * const BlockExportDel = struct("block-export-del-arg", [
 *   member("id", BUILTIN.str),
 *   member("mode", BUILTIN.str, { optional: true }),
 * ]);
 * ```
 * @module
 */

/** A builtin type: how QEMU names it and what JSON value it takes. */
export interface QapiBuiltin {
  /** Discriminates the kinds of types. */
  readonly kind: "builtin";
  /** QAPI's name: str, bool, int, int64, uint16, uint32, uint64, size, number, any. */
  readonly name: BuiltinName;
}

/** Names of the builtin types denbd uses. */
export type BuiltinName =
  | "str"
  | "bool"
  | "int"
  | "int64"
  | "uint16"
  | "uint32"
  | "uint64"
  | "size"
  | "number"
  | "any";

/** An enumeration of strings. */
export interface QapiEnum {
  /** Discriminates the kinds of types. */
  readonly kind: "enum";
  /** QAPI's name of the enum (used in introspection, not in messages). */
  readonly name: string;
  /** Accepted values, in schema order. */
  readonly values: readonly string[];
}

/** A member of a struct or of a union's base. */
export interface QapiMember {
  /** The member's name on the wire, e.g. "node-name". */
  readonly name: string;
  /** Its type. */
  readonly type: QapiType;
  /** The member may be absent. */
  readonly optional: boolean;
}

/** An object with fixed members. */
export interface QapiStruct {
  /** Discriminates the kinds of types. */
  readonly kind: "struct";
  /** QAPI's name (some messages show it, e.g. "expected: BlockDirtyBitmap"). */
  readonly name: string;
  /** Members, in schema order. */
  readonly members: readonly QapiMember[];
}

/**
 * A flat union: common base members, one of which (the discriminator, an
 * enum) selects which branch's members are also present.
 */
export interface QapiUnion {
  /** Discriminates the kinds of types. */
  readonly kind: "union";
  /** QAPI's name. */
  readonly name: string;
  /** Members every variant has, the discriminator among them. */
  readonly base: readonly QapiMember[];
  /** Name of the base member whose value picks the branch. */
  readonly discriminator: string;
  /** Extra members per discriminator value; values without a branch have none. */
  readonly branches: Readonly<Record<string, QapiStruct>>;
  /**
   * Discriminator values whose members denbd does not model: whatever
   * members come with them are accepted unchecked (the command refuses the
   * value itself later, with its own message).
   */
  readonly unmodelled: readonly string[];
}

/** A value that may be one of several types, told apart by its JSON type. */
export interface QapiAlternate {
  /** Discriminates the kinds of types. */
  readonly kind: "alternate";
  /** QAPI's name (shown in "expected: NAME" messages). */
  readonly name: string;
  /** The possible types, each of a different JSON type. */
  readonly alternatives: readonly QapiType[];
}

/** A list of values of one type. */
export interface QapiArray {
  /** Discriminates the kinds of types. */
  readonly kind: "array";
  /** Type of the elements. */
  readonly element: QapiType;
}

/** Any QAPI type. */
export type QapiType = QapiBuiltin | QapiEnum | QapiStruct | QapiUnion | QapiAlternate | QapiArray;

/** The builtin types, one value each. */
export const BUILTIN: Readonly<Record<BuiltinName, QapiBuiltin>> = Object.fromEntries(
  (["str", "bool", "int", "int64", "uint16", "uint32", "uint64", "size", "number", "any"] as const)
    .map((name) => [name, { kind: "builtin", name }]),
) as Record<BuiltinName, QapiBuiltin>;

/** A member of `type`, required unless `optional`. */
export function member(
  name: string,
  type: QapiType,
  options: { optional?: boolean } = {},
): QapiMember {
  return { name, type, optional: Boolean(options.optional) };
}

/** An optional member (QAPI's "*name"). */
export function optional(name: string, type: QapiType): QapiMember {
  return member(name, type, { optional: true });
}

/** A struct named `name` with `members`. */
export function struct(name: string, members: readonly QapiMember[]): QapiStruct {
  return { kind: "struct", name, members };
}

/** An enum named `name` of `values`. */
export function enumeration(name: string, values: readonly string[]): QapiEnum {
  return { kind: "enum", name, values };
}

/**
 * A flat union named `name`; the discriminator must be an enum member of
 * `base`. Values listed in `unmodelled` take any members, unchecked.
 */
export function union(
  name: string,
  base: readonly QapiMember[],
  discriminator: string,
  branches: Readonly<Record<string, QapiStruct>>,
  unmodelled: readonly string[] = [],
): QapiUnion {
  const tag = base.find((candidate) => candidate.name === discriminator);
  if (!tag || tag.type.kind !== "enum" || tag.optional) {
    throw new Error(`union ${name}: discriminator '${discriminator}' must be a required enum`);
  }
  return { kind: "union", name, base, discriminator, branches, unmodelled };
}

/** An alternate named `name` of `alternatives`. */
export function alternate(name: string, alternatives: readonly QapiType[]): QapiAlternate {
  return { kind: "alternate", name, alternatives };
}

/** A list of `element`. */
export function array(element: QapiType): QapiArray {
  return { kind: "array", element };
}

/** A struct with the members of `base` followed by `members` (QAPI's 'base'). */
export function extend(name: string, base: QapiStruct, members: readonly QapiMember[]): QapiStruct {
  return struct(name, [...base.members, ...members]);
}

/** The struct with no members (arguments and returns of many commands). */
export const EMPTY_STRUCT: QapiStruct = struct("q_empty", []);
