/**
 * Tab completion of the QMP shell's input (see shell-syntax.ts) from the
 * server's schema: the first word completes to a command name (or `help`),
 * the word after `help` to a command name, and a later word to an argument
 * key of that command: `name=` for a value, `name.` for an object whose
 * members follow with dotted keys (`addr.` then `addr.type=`), members
 * already given left out. After `key=`, a key with few named values (an
 * enum, a boolean) completes to `key=VALUE`. Union branches follow the tag
 * values already on the line: with `addr.type=unix`, `addr.` offers the
 * unix branch's members only.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { QmpIntrospection } from "./introspected-schema.ts";
 * import { completeShellLine } from "./shell-completion.ts";
 * const schema = QmpIntrospection.fromCommandNames(["query-version", "query-name", "quit"]);
 * assert.deepEqual(completeShellLine(schema, "que"), {
 *   start: 0,
 *   candidates: ["query-name", "query-version"],
 * });
 * ```
 * @module
 */

import type { QmpIntrospection } from "./introspected-schema.ts";
import type { JsonObject } from "./json-value.ts";
import { ShellParser, tokenize } from "./shell-syntax.ts";

/** What may replace the word before the cursor. */
export interface Completion {
  /** Where the word being completed starts in the line. */
  readonly start: number;
  /** Whole words that may replace it, sorted; empty when none fits. */
  readonly candidates: readonly string[];
}

/** The completions of the word that ends at the end of `line` (the text before the cursor). */
export function completeShellLine(schema: QmpIntrospection, line: string): Completion {
  const start = /\S*$/.exec(line)!.index;
  const word = line.slice(start);
  let before: string[];
  try {
    before = tokenize(line.slice(0, start));
  } catch {
    return { start, candidates: [] };
  }
  const fitting = (words: Iterable<string>) => ({
    start,
    candidates: [...new Set(words)].filter((candidate) => candidate.startsWith(word)).sort(),
  });
  if (before.length === 0) return fitting([...schema.commandNames(), "help"]);
  const [command] = before;
  if (command === "help") return fitting(before.length === 1 ? schema.commandNames() : []);
  const given = givenArguments(command, before.slice(1));
  const equals = word.indexOf("=");
  const path = (equals < 0 ? word : word.slice(0, equals)).split(".");
  const name = path.pop()!;
  const members = schema.members(command, path, given) ?? [];
  const prefix = path.map((key) => `${key}.`).join("");
  if (equals >= 0) {
    const member = members.find((m) => m.name === name);
    return fitting(member ? member.choices.map((choice) => `${prefix}${name}=${choice}`) : []);
  }
  const container = path.reduce<unknown>(
    (object, key) => (object as JsonObject | undefined)?.[key],
    given,
  ) as JsonObject | undefined;
  return fitting(
    members
      .filter((m) => m.holds === "object" || !Object.hasOwn(container ?? {}, m.name))
      .map((m) => `${prefix}${m.name}${m.holds === "object" ? "." : "="}`),
  );
}

/** The arguments `words` give `command` (none if they do not parse yet). */
function givenArguments(command: string, words: readonly string[]): JsonObject {
  const parsed = new ShellParser().parse([command, ...words].join(" "));
  return parsed.kind === "request" && parsed.request.arguments
    ? parsed.request.arguments as JsonObject
    : {};
}
