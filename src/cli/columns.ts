/**
 * Words in columns across the terminal, filled down each column as
 * readline lists completions (and `ls` lists files).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatColumns } from "./columns.ts";
 * assert.equal(formatColumns(["a", "bb", "c", "dd", "e"], 12), "a   c   e\nbb  dd");
 * ```
 * @module
 */

/** `words` in columns across `width` characters, two spaces between columns. */
export function formatColumns(words: readonly string[], width: number): string {
  if (words.length === 0) return "";
  const cell = Math.max(...words.map((word) => word.length)) + 2;
  const perLine = Math.max(1, Math.floor(width / cell));
  const lines = Math.ceil(words.length / perLine);
  const rows: string[] = [];
  for (let row = 0; row < lines; row++) {
    let text = "";
    for (let column = row; column < words.length; column += lines) {
      text += words[column].padEnd(cell);
    }
    rows.push(text.trimEnd());
  }
  return rows.join("\n");
}

/** The terminal's width in columns, 80 when standard output is not a terminal or does not say. */
export function terminalColumns(): number {
  try {
    return Deno.consoleSize().columns || 80;
  } catch {
    return 80;
  }
}
