/**
 * Text made safe for troff's man macros: backslashes, hyphens (as `\-`, a
 * minus that stays a searchable, copyable hyphen), non-ASCII characters (as
 * `\[uXXXX]`), lines that would start with a control character (`.` or `'`),
 * and break points inside long unspaced words (keyval forms, URIs) so a
 * filled line never overflows.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bold, textLine } from "./troff.ts";
 * assert.equal(textLine(".hidden -v C:\\dir"), "\\&.hidden \\-v C:\\edir");
 * assert.equal(bold("--json"), "\\fB\\-\\-json\\fR");
 * ```
 * @module
 */

/** Unspaced words longer than this get break points after their commas and bars. */
const LONG_WORD = 40;

/** `text` escaped for use inside a troff line (not at its start). */
export function escapeTroff(text: string): string {
  return text
    .replace(/[\\-]/g, (character) => character === "\\" ? "\\e" : "\\-")
    .replace(/[^\x20-\x7e]/gu, (character) => {
      const code = character.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
      return `\\[u${code}]`;
    })
    .replace(
      new RegExp(`\\S{${LONG_WORD},}`, "g"),
      (word) => word.replace(/([,|])(?=\S)/g, "$1\\:"),
    );
}

/** `text` as a whole input line: escaped, and never read as a request. */
export function textLine(text: string): string {
  return guardLine(escapeTroff(text));
}

/** An already escaped line, with `\&` in front when it would start like a request. */
export function guardLine(line: string): string {
  return /^[.']/.test(line) ? `\\&${line}` : line;
}

/** `text` in bold, escaped. */
export function bold(text: string): string {
  return `\\fB${escapeTroff(text)}\\fR`;
}

/** `text` in italics, escaped. */
export function italic(text: string): string {
  return `\\fI${escapeTroff(text)}\\fR`;
}
