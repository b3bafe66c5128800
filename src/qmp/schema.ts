/**
 * The type system of denbd's QMP interface, modelled on QEMU's QAPI: named
 * builtins, enums, structs, flat unions with a discriminator, alternates,
 * arrays and events. Commands, their arguments and replies, events and the
 * daemon's command-line options are all described with these values, and
 * everything else (input validation with QEMU's error messages,
 * `query-commands`, `--help`, the TypeScript types of validated values) is
 * derived from the descriptions.
 *
 * The builders are generic: each schema value keeps its member names,
 * optionality, enum values and branches in its TypeScript type, and
 * {@linkcode QapiValue} turns that type into the type of the values the
 * input visitor produces for it, so no value type is ever written by hand.
 *
 * @example
 * ```ts
 * import { BUILTIN, enumeration, optional, member, type QapiValue, struct } from "./schema.ts";
 * const BlockExportDel = struct("block-export-del-arg", [
 *   member("id", BUILTIN.str),
 *   optional("mode", enumeration("BlockExportRemoveMode", ["safe", "hard"])),
 * ]);
 * const args: QapiValue<typeof BlockExportDel> = { id: "e0", mode: "hard" };
 * ```
 * @module
 */

import type { JsonValue } from "./json-value.ts";

/** A builtin type: how QEMU names it and what JSON value it takes. */
export interface QapiBuiltin<N extends BuiltinName = BuiltinName> {
  /** Discriminates the kinds of types. */
  readonly kind: "builtin";
  /** QAPI's name: str, bool, int, int64, uint16, uint32, uint64, size, number, any, null. */
  readonly name: N;
}

/**
 * The builtin types denbd uses, by QAPI name, with the type of their values
 * (integers of every width are `number`s; `any` passes JSON through).
 */
interface BuiltinValues {
  str: string;
  bool: boolean;
  int: number;
  int64: number;
  uint16: number;
  uint32: number;
  uint64: number;
  size: number;
  number: number;
  any: JsonValue;
  null: null;
}

/** Names of the builtin types denbd uses. */
export type BuiltinName = keyof BuiltinValues;

/** An enumeration of strings; `V` is the union of its values. */
export interface QapiEnum<V extends string = string> {
  /** Discriminates the kinds of types. */
  readonly kind: "enum";
  /** QAPI's name of the enum (used in introspection, not in messages). */
  readonly name: string;
  /** Accepted values, in schema order. */
  readonly values: readonly V[];
}

/** A member of a struct or of a union's base: named `N`, of type `T`, optional if `O`. */
export interface QapiMember<
  N extends string = string,
  T extends QapiType = QapiType,
  O extends boolean = boolean,
> {
  /** The member's name on the wire, e.g. "node-name". */
  readonly name: N;
  /** Its type. */
  readonly type: T;
  /** The member may be absent. */
  readonly optional: O;
}

/** An object with fixed members `M`. */
export interface QapiStruct<M extends readonly QapiMember[] = readonly QapiMember[]> {
  /** Discriminates the kinds of types. */
  readonly kind: "struct";
  /** QAPI's name (some messages show it, e.g. "expected: BlockDirtyBitmap"). */
  readonly name: string;
  /** Members, in schema order. */
  readonly members: M;
}

/** Extra members of a flat union, by discriminator value. */
export type QapiBranches = { readonly [value: string]: QapiStruct };

/**
 * A flat union: common base members `B`, one of which (the discriminator
 * `D`, an enum) selects which branch's members (from `R`) are also present.
 * Discriminator values of `U` are not modelled.
 */
export interface QapiUnion<
  B extends readonly QapiMember[] = readonly QapiMember[],
  D extends string = string,
  R extends QapiBranches = QapiBranches,
  U extends string = string,
> {
  /** Discriminates the kinds of types. */
  readonly kind: "union";
  /** QAPI's name. */
  readonly name: string;
  /** Members every variant has, the discriminator among them. */
  readonly base: B;
  /** Name of the base member whose value picks the branch. */
  readonly discriminator: D;
  /** Extra members per discriminator value; values without a branch have none. */
  readonly branches: R;
  /**
   * Discriminator values whose members denbd does not model: whatever
   * members come with them are accepted unchecked (the command refuses the
   * value itself later, with its own message).
   */
  readonly unmodelled: readonly U[];
}

/** A value that may be one of several types `A`, told apart by its JSON type. */
export interface QapiAlternate<A extends readonly QapiType[] = readonly QapiType[]> {
  /** Discriminates the kinds of types. */
  readonly kind: "alternate";
  /** QAPI's name (shown in "expected: NAME" messages). */
  readonly name: string;
  /** The possible types, each of a different JSON type. */
  readonly alternatives: A;
}

/** A list of values of type `E`. */
export interface QapiArray<E extends QapiType = QapiType> {
  /** Discriminates the kinds of types. */
  readonly kind: "array";
  /** Type of the elements. */
  readonly element: E;
}

/** Any QAPI type. */
export type QapiType = QapiBuiltin | QapiEnum | QapiStruct | QapiUnion | QapiAlternate | QapiArray;

/** An event named `N` whose data is the struct `D` (QAPI's 'event' with 'data'). */
export interface QapiEvent<N extends string = string, D extends QapiStruct = QapiStruct> {
  /** Discriminates events from types. */
  readonly kind: "event";
  /** The event's name, e.g. "BLOCK_EXPORT_DELETED". */
  readonly name: N;
  /** Its data members. */
  readonly data: D;
}

declare const forwardTarget: unique symbol;

/**
 * The declared type of a union or struct used before its definition, which
 * a recursive schema needs (BlockdevOptions holds a BlockdevRef that holds
 * BlockdevOptions; ImageInfo holds its backing image's ImageInfo). At
 * runtime it is the type itself (or a struct whose members are looked up on
 * use); to the type checker it also names the type's exact type as member
 * `K` of the interface `Scope`, which is resolved only when a value type is
 * derived, so the cycle never has to be written out.
 */
export type QapiForward<Scope, K extends keyof Scope> = (QapiUnion | QapiStruct) & {
  readonly [forwardTarget]?: readonly [Scope, K];
};

// ---------------------------------------------------------------------------
// Value types derived from schema types

/** The value of the member `M`, keyed by its name. */
type MemberValues<M extends QapiMember> =
  & { readonly [P in M as P["optional"] extends true ? never : P["name"]]: QapiValue<P["type"]> }
  & { readonly [P in M as P["optional"] extends true ? P["name"] : never]?: QapiValue<P["type"]> };

/** The object holding the members `M` that are present. */
type StructValue<M extends readonly QapiMember[]> = readonly QapiMember[] extends M
  ? Readonly<Record<string, unknown>>
  : MemberValues<M[number]>;

/** The values of the discriminator `D` among the members `B`. */
type TagValues<B extends readonly QapiMember[], D extends string> =
  Extract<B[number], { readonly name: D }>["type"] extends QapiEnum<infer V> ? V : never;

/** The members of one variant of a union: the base, with the tag `V`, and its branch. */
type VariantValue<
  B extends readonly QapiMember[],
  D extends string,
  R extends QapiBranches,
  U extends string,
  V extends string,
> =
  & StructValue<B>
  & { readonly [P in D]: V }
  & (V extends keyof R ? QapiValue<R[V]> : V extends U ? { readonly [member: string]: unknown }
  : unknown);

/** The discriminator values of a union that have no branch and are listed as unmodelled. */
type UnmodelledTags<
  B extends readonly QapiMember[],
  D extends string,
  R extends QapiBranches,
  U extends string,
> = Exclude<Extract<TagValues<B, D>, U>, keyof R>;

/** A union's value: one variant per discriminator value, the unmodelled ones as one. */
type UnionValue<
  B extends readonly QapiMember[],
  D extends string,
  R extends QapiBranches,
  U extends string,
> = string extends D ? Readonly<Record<string, unknown>>
  :
    | {
      [V in TagValues<B, D>]: V extends UnmodelledTags<B, D, R, U> ? never
        : VariantValue<B, D, R, U, V>;
    }[TagValues<B, D>]
    | ([UnmodelledTags<B, D, R, U>] extends [never] ? never
      : VariantValue<B, D, R, U, UnmodelledTags<B, D, R, U>>);

/** The value of a type declared with {@linkcode QapiForward}. */
type ForwardValue<T> = T extends { readonly [forwardTarget]?: readonly [infer S, infer K] }
  ? K extends keyof S ? QapiValue<S[K]> : never
  : never;

/**
 * The value the input visitor produces for the schema type `T` (with
 * QEMU's member names): strings for `str` and enums (the union of the enum's
 * values), numbers for integers, booleans, readonly arrays and objects whose
 * optional members may be absent. Unions give one variant per discriminator
 * value, so `switch (value.driver)` narrows to a branch's members.
 */
export type QapiValue<T> = T extends unknown ? NamedValue<T> : never;

/** {@linkcode QapiValue} of one type (not a union of schema types). */
type NamedValue<T> = typeof forwardTarget extends keyof T ? ForwardValue<T>
  : T extends QapiBuiltin<infer N> ? BuiltinValues[N]
  : T extends QapiEnum<infer V> ? V
  : T extends QapiArray<infer E> ? QapiType extends E ? readonly unknown[] : readonly QapiValue<E>[]
  : T extends QapiAlternate<infer A> ? QapiType extends A[number] ? unknown : QapiValue<A[number]>
  : T extends QapiStruct<infer M> ? StructValue<M>
  : T extends QapiUnion<infer B, infer D, infer R, infer U> ? UnionValue<B, D, R, U>
  : unknown;

// ---------------------------------------------------------------------------
// Builders

/** The builtin types, one value each. */
export const BUILTIN: { readonly [N in BuiltinName]: QapiBuiltin<N> } = {
  str: { kind: "builtin", name: "str" },
  bool: { kind: "builtin", name: "bool" },
  int: { kind: "builtin", name: "int" },
  int64: { kind: "builtin", name: "int64" },
  uint16: { kind: "builtin", name: "uint16" },
  uint32: { kind: "builtin", name: "uint32" },
  uint64: { kind: "builtin", name: "uint64" },
  size: { kind: "builtin", name: "size" },
  number: { kind: "builtin", name: "number" },
  any: { kind: "builtin", name: "any" },
  null: { kind: "builtin", name: "null" },
};

/** A required member. */
export function member<const N extends string, T extends QapiType>(
  name: N,
  type: T,
): QapiMember<N, T, false> {
  return { name, type, optional: false };
}

/** An optional member (QAPI's "*name"). */
export function optional<const N extends string, T extends QapiType>(
  name: N,
  type: T,
): QapiMember<N, T, true> {
  return { name, type, optional: true };
}

/** A struct named `name` with `members`. */
export function struct<const M extends readonly QapiMember[]>(
  name: string,
  members: M,
): QapiStruct<M> {
  return { kind: "struct", name, members };
}

/** An enum named `name` of `values`. */
export function enumeration<const V extends string>(
  name: string,
  values: readonly V[],
): QapiEnum<V> {
  return { kind: "enum", name, values };
}

/**
 * A flat union named `name`; the discriminator must be a required enum
 * member of `base`. Values listed in `unmodelled` take any members, unchecked.
 */
export function union<
  const B extends readonly QapiMember[],
  const D extends B[number]["name"],
  const R extends QapiBranches,
  const U extends string = never,
>(
  name: string,
  base: B,
  discriminator: D,
  branches: R,
  unmodelled: readonly U[] = [],
): QapiUnion<B, D, R, U> {
  const tag = base.find((candidate) => candidate.name === discriminator);
  if (!tag || tag.type.kind !== "enum" || tag.optional) {
    throw new Error(`union ${name}: discriminator '${discriminator}' must be a required enum`);
  }
  return { kind: "union", name, base, discriminator, branches, unmodelled };
}

/**
 * An alternate named `name` of `alternatives`. Given as a function, the
 * alternatives are looked up on each use, so they may include a type
 * defined later (see {@linkcode QapiForward}).
 */
export function alternate<const A extends readonly QapiType[]>(
  name: string,
  alternatives: A | (() => A),
): QapiAlternate<A> {
  if (typeof alternatives !== "function") return { kind: "alternate", name, alternatives };
  return {
    kind: "alternate",
    name,
    get alternatives() {
      return alternatives();
    },
  };
}

/** A list of `element`. */
export function array<T extends QapiType>(element: T): QapiArray<T> {
  return { kind: "array", element };
}

/** A struct with the members of `base` followed by `members` (QAPI's 'base'). */
export function extend<
  const B extends readonly QapiMember[],
  const M extends readonly QapiMember[],
>(name: string, base: QapiStruct<B>, members: M): QapiStruct<readonly [...B, ...M]> {
  return struct(name, [...base.members, ...members] as const);
}

/** An event named `name` carrying `data`. */
export function event<const N extends string, D extends QapiStruct>(
  name: N,
  data: D,
): QapiEvent<N, D> {
  return { kind: "event", name, data };
}

/** The struct with no members (arguments and returns of many commands). */
export const EMPTY_STRUCT: QapiStruct<readonly []> = struct("q_empty", []);
