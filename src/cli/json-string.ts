/**
 * Strings quoted the way nbdinfo writes them in its output: backslash and
 * double quote escaped, control characters as `\u00XX`, everything else
 * (including non-ASCII text) as it is.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { jsonString } from "./json-string.ts";
 * assert.equal(jsonString('a "b"'), '"a \\"b\\""');
 * ```
 * @module
 */

/** `text` in double quotes, escaped as nbdinfo escapes it (valid JSON). */
export function jsonString(text: string): string {
  // deno-lint-ignore no-control-regex
  const escaped = text.replace(/[\\"\u0000-\u001f]/g, (character) => {
    const code = character.charCodeAt(0);
    return code < 0x20 ? `\\u${code.toString(16).padStart(4, "0")}` : `\\${character}`;
  });
  return `"${escaped}"`;
}
