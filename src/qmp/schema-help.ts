/**
 * Syntax summaries of QAPI types in QEMU's keyval syntax, for `--help`: the
 * keys a command-line option takes are read off the type that validates it,
 * so a member or union branch added to the schema shows up in the help with
 * no other edit.
 *
 * A struct has one form; a union has one per discriminator value it models
 * (a union-typed member multiplies its container's forms the same way).
 * Each form lists its required keys first, then its optional ones in
 * brackets, each in schema order. Nested structs are dotted keys
 * (`cache.direct=on|off`), list elements are numbered (`bitmaps.N=...`), a
 * value is a placeholder of its type (`<str>`, `<uint32>`, `on|off`, an
 * enum's values), and an alternate lists its forms with `|`, an object form
 * as `KEY.*=<Type>` (the members of Type under `KEY.`).
 *
 * @example
 * ```ts
 * import { BUILTIN, member, optional, struct } from "./schema.ts";
 * import { keyvalSyntax, wrapSyntax } from "./schema-help.ts";
 * const Monitor = struct("Monitor", [
 *   member("chardev", BUILTIN.str),
 *   optional("pretty", BUILTIN.bool),
 * ]);
 * const [form] = keyvalSyntax(Monitor, { impliedKey: "chardev" });
 * // form: ["[chardev=]<str>", "[,pretty=on|off]"]
 * wrapSyntax(form, 20); // ["[chardev=]<str>", "[,pretty=on|off]"]
 * ```
 * @module
 */

import type { QapiBuiltin, QapiMember, QapiStruct, QapiType, QapiUnion } from "./schema.ts";

/** What to show of a type in {@link keyvalSyntax}. */
export interface KeyvalSyntaxOptions {
  /** The key the option's first element may leave out: shown first, as `[driver=]file`. */
  readonly impliedKey?: string;
  /**
   * For a union: the discriminator values to show, when not every value the
   * schema models is served. Values outside the schema are never shown.
   */
  readonly only?: readonly string[];
}

/** One `key=value` of a form, required or optional. */
interface SyntaxElement {
  /** The key with its dotted path, e.g. `cache.direct`. */
  readonly key: string;
  /** The element as written (without its comma), e.g. `cache.direct=on|off`. */
  readonly text: string;
  /** It may be left out. */
  readonly optional: boolean;
}

/** One form of a type: the elements that may be written together. */
type SyntaxForm = readonly SyntaxElement[];

/**
 * The forms of `type` as option text: one list of pieces per form, to be
 * written one after the other (`"[driver=]file"`, `",filename=<str>"`,
 * `"[,node-name=<str>]"`, ...); see {@link wrapSyntax} to break them into lines.
 */
export function keyvalSyntax(
  type: QapiStruct | QapiUnion,
  options: KeyvalSyntaxOptions = {},
): string[][] {
  const forms = type.kind === "union"
    ? unionForms(type, "", false, options.only)
    : membersForms(type.members, "", false);
  return forms.map((form) => pieces(form, options.impliedKey));
}

/**
 * Join the pieces of one form into lines of at most `width` characters,
 * breaking only between pieces (a piece longer than `width` gets a line of
 * its own).
 */
export function wrapSyntax(form: readonly string[], width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const piece of form) {
    if (line && line.length + piece.length > width) {
      lines.push(line);
      line = "";
    }
    line += piece;
  }
  if (line) lines.push(line);
  return lines;
}

/** A form's pieces: the implied key first, then required, then optional elements. */
function pieces(form: SyntaxForm, impliedKey: string | undefined): string[] {
  const implied = form.find((element) => element.key === impliedKey);
  const rest = form.filter((element) => element !== implied);
  const ordered = [
    ...rest.filter((element) => !element.optional),
    ...rest.filter((element) => element.optional),
  ];
  const result = implied ? [`[${implied.text.replace("=", "=]")}`] : [];
  for (const element of ordered) {
    const piece = result.length ? `,${element.text}` : element.text;
    result.push(element.optional ? `[${piece}]` : piece);
  }
  return result;
}

/** Every combination of one form from each of `choices`, in order. */
function combine(choices: readonly (readonly SyntaxForm[])[]): SyntaxForm[] {
  let forms: SyntaxForm[] = [[]];
  for (const choice of choices) {
    forms = forms.flatMap((form) => choice.map((more) => [...form, ...more]));
  }
  return forms;
}

function membersForms(
  members: readonly QapiMember[],
  prefix: string,
  optional: boolean,
): SyntaxForm[] {
  return combine(
    members.map((m) => typeForms(m.type, prefix + m.name, optional || m.optional)),
  );
}

/** The discriminator values of `union` that the schema models, in the enum's order. */
function modelledValues(union: QapiUnion): string[] {
  const tag = union.base.find((m) => m.name === union.discriminator)!;
  const values = tag.type.kind === "enum" ? tag.type.values : [];
  return values.filter((value) =>
    Object.hasOwn(union.branches, value) || !union.unmodelled.includes(value)
  );
}

function unionForms(
  union: QapiUnion,
  prefix: string,
  optional: boolean,
  only?: readonly string[],
): SyntaxForm[] {
  const values = modelledValues(union).filter((value) => !only || only.includes(value));
  return values.flatMap((value) => {
    const key = prefix + union.discriminator;
    const tag: SyntaxElement = { key, text: `${key}=${value}`, optional };
    const base = membersForms(
      union.base.filter((m) => m.name !== union.discriminator),
      prefix,
      optional,
    );
    const branch = Object.hasOwn(union.branches, value)
      ? membersForms(union.branches[value].members, prefix, optional)
      : [[]];
    return combine([[[tag]], base, branch]);
  });
}

function typeForms(type: QapiType, key: string, optional: boolean): SyntaxForm[] {
  switch (type.kind) {
    case "struct":
      return membersForms(type.members, `${key}.`, optional);
    case "union":
      return unionForms(type, `${key}.`, optional);
    case "array":
      return typeForms(type.element, `${key}.N`, optional);
    default:
      return [[{ key, text: valueSyntax(type, key), optional }]];
  }
}

/** `key=<placeholder>` for a scalar; each form joined with `|` for an alternate. */
function valueSyntax(type: QapiType, key: string): string {
  switch (type.kind) {
    case "builtin":
      return `${key}=${builtinPlaceholder(type)}`;
    case "enum":
      return `${key}=${type.values.join("|")}`;
    case "alternate": {
      const isScalar = (t: QapiType) => t.kind === "builtin" || t.kind === "enum";
      const scalars = type.alternatives.filter(isScalar);
      const objects = type.alternatives.filter((t) => !isScalar(t));
      return [
        ...scalars.map((t) => valueSyntax(t, key)),
        ...objects.map((t) => `${key}.*=<${"name" in t ? t.name : t.kind}>`),
      ].join("|");
    }
    default:
      return `${key}.*=<${"name" in type ? type.name : type.kind}>`;
  }
}

function builtinPlaceholder(type: QapiBuiltin): string {
  return type.name === "bool" ? "on|off" : `<${type.name}>`;
}
